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
        routes::social::relationships, routes::social::request_friend, routes::social::set_relationship,
        routes::social::remove_relationship, routes::social::presence_settings, routes::social::set_presence,
        routes::social::channel_typing, routes::social::dm_typing, routes::social::mark_channel_read,
        routes::social::mark_dm_read, routes::social::set_notification_settings,
        routes::health::healthz, routes::health::readyz, routes::health::metrics, routes::health::openapi,
    ),
    components(schemas(
        copains_client_core::social::Presence, copains_client_core::social::PresenceUpdate,
        copains_client_core::social::TypingStart, copains_client_core::social::RelationshipRemoved,
    )),
    modifiers(&BearerAuth),
    tags((name = "auth"), (name = "users"), (name = "keys"), (name = "devices"), (name = "messages"), (name = "servers"), (name = "channels"), (name = "invites"), (name = "channel messages"), (name = "voice"), (name = "social"), (name = "admin"), (name = "operations")),
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
pub fn document() -> &'static serde_json::Value {
    static DOC: OnceLock<serde_json::Value> = OnceLock::new();
    DOC.get_or_init(|| with_id_patterns(ApiDoc::openapi()))
}

/// Says in the document what the routes check of their path and query ids: a path parameter
/// named `…_id`, and the query parameters that name a message, user or page cursor by id, are
/// decimal ids ([`copains_client_core::ids::ID_PATTERN`]); a device id is 1–127.
fn with_id_patterns(doc: utoipa::openapi::OpenApi) -> serde_json::Value {
    static CURSOR_PATTERN: OnceLock<String> = OnceLock::new();
    const ID_QUERIES: [&str; 7] = ["before", "after", "around", "thread_id", "actor_id", "target_id", "owner_id"];
    let mut json = serde_json::to_value(&doc).expect("the document serializes");
    let operations = json["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .flat_map(|item| item.as_object_mut().into_iter().flat_map(|methods| methods.values_mut()));
    for operation in operations {
        let Some(parameters) = operation.get_mut("parameters").and_then(|p| p.as_array_mut()) else { continue };
        for parameter in parameters {
            let name = parameter["name"].as_str().unwrap_or_default().to_owned();
            let place = parameter["in"].as_str().unwrap_or_default();
            let pattern = match (place, name.as_str()) {
                ("path", "device_id") => "^([1-9]|[1-9][0-9]|1[01][0-9]|12[0-7])$",
                ("path", n) if n.ends_with("_id") => copains_client_core::ids::ID_PATTERN,
                ("query", n) if ID_QUERIES.contains(&n) => copains_client_core::ids::ID_PATTERN,
                // Empty is the first page.
                ("query", "cursor") => CURSOR_PATTERN.get_or_init(|| format!("^$|{}", copains_client_core::ids::ID_PATTERN)),
                _ => continue,
            };
            if let Some(schema) = parameter.get_mut("schema").and_then(|s| s.as_object_mut()) {
                if name == "device_id" && schema.get("type").and_then(|t| t.as_str()) == Some("integer") {
                    schema.insert("minimum".into(), 1.into());
                    schema.insert("maximum".into(), 127.into());
                    continue;
                }
                if schema.get("type").and_then(|t| t.as_str()).is_some_and(|t| t == "string")
                    || schema.get("type").and_then(|t| t.as_array()).is_some_and(|t| t.iter().any(|t| t == "string"))
                {
                    schema.insert("pattern".into(), pattern.into());
                }
            }
        }
    }
    json
}
