//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(title = "LesCopains API", description = "REST API of LesCopains. Errors are `{\"error\":{\"code\",\"message\"}}`. The real-time gateway is described in docs/gateway.md.", license(name = "AGPL-3.0-only")),
    paths(
        routes::auth::register, routes::auth::login, routes::auth::refresh, routes::auth::logout,
        routes::users::me, routes::users::update_me, routes::users::change_password,
        routes::users::sessions, routes::users::revoke_session, routes::users::devices,
        routes::users::remove_device, routes::users::rename_device,
        routes::users::lookup, routes::users::user_by_id,
        routes::keys::upload, routes::keys::count, routes::keys::bundles, routes::keys::device_bundle,
        routes::messages::send, routes::messages::queue, routes::messages::ack,
        routes::channel_messages::recipients, routes::channel_messages::send, routes::channel_messages::history,
        routes::channel_messages::send_sender_keys, routes::channel_messages::claim_bundles,
        routes::channel_messages::device_lists, routes::channel_messages::message,
        routes::channel_messages::edit, routes::channel_messages::remove, routes::channel_messages::react,
        routes::channel_messages::unreact, routes::channel_messages::pins, routes::channel_messages::pin,
        routes::channel_messages::unpin,
        routes::servers::create_server, routes::servers::list_servers, routes::servers::get_server,
        routes::servers::server_state, routes::servers::edit_server, routes::servers::delete_server,
        routes::servers::leave_server, routes::servers::members, routes::servers::member, routes::servers::kick,
        routes::servers::set_member_roles, routes::servers::bans, routes::servers::ban, routes::servers::unban,
        routes::servers::roles, routes::servers::create_role, routes::servers::edit_role, routes::servers::delete_role,
        routes::channels::create_channel, routes::channels::server_channels, routes::channels::channel,
        routes::channels::edit_channel, routes::channels::delete_channel, routes::channels::create_group_dm,
        routes::channels::group_dms, routes::channels::add_recipient, routes::channels::remove_recipient,
        routes::invites::create_invite, routes::invites::invites, routes::invites::preview, routes::invites::join,
        routes::invites::revoke, routes::invites::guest_preview, routes::invites::guest_join,
        routes::devices::device_list, routes::devices::publish_device_list,
        routes::devices::recovery, routes::devices::put_recovery,
        routes::devices::open_link_request, routes::devices::link_requests, routes::devices::own_link_request,
        routes::devices::answer_link_request, routes::devices::decline_link_request,
        routes::voice::moderate, routes::voice::ice_servers,
        routes::moderation::timeout, routes::moderation::lift_timeout, routes::moderation::audit_log,
        routes::moderation::purge_messages,
        routes::admin::users, routes::admin::user, routes::admin::disable, routes::admin::enable, routes::admin::logout,
        routes::admin::set_role, routes::admin::stats, routes::admin::audit_log, routes::admin::bans,
        routes::admin::create_ban, routes::admin::lift_ban, routes::admin::user_sessions, routes::admin::servers,
        routes::admin::server, routes::admin::take_down, routes::admin::restore, routes::admin::delete_user,
        routes::health::healthz, routes::health::readyz, routes::health::metrics, routes::health::openapi,
    ),
    modifiers(&BearerAuth),
    tags((name = "auth"), (name = "users"), (name = "keys"), (name = "devices"), (name = "messages"), (name = "servers"), (name = "channels"), (name = "invites"), (name = "channel messages"), (name = "voice"), (name = "admin"), (name = "operations")),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// The document (built once).
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(ApiDoc::openapi)
}
