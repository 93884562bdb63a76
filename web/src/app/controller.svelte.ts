/**
 * Which screen the app shows, and the moves between them: sign-in and sign-up, unlocking the
 * local store after a reload, the wrong-password case, the chat itself, and the way back to
 * sign-in when the login session ends. Everything the chat needs (the WASM engine, the
 * gateway, the shell) is loaded only once the person has signed in: the sign-in screen stays
 * small.
 */

import type { Component } from 'svelte';
import { ApiClient } from '../lib/api/client';
import { ApiError, NetworkError, SessionEndedError } from '../lib/api/errors';
import type { AuthResponse, GuestInvite } from '../lib/api/types';
import { deviceName } from '../lib/device';
import { engineErrorKind } from '../lib/engine/types';
import { LocalState, type StoredSession } from '../lib/storage';
import { acquireTabLock } from '../lib/tablock';
import type * as Boot from '../features/shell/boot';

export interface Notice {
  kind: 'info' | 'error';
  text: string;
}

export type Screen =
  | { name: 'loading' }
  | { name: 'signin'; notice?: Notice; username?: string; guest?: GuestOffer }
  | { name: 'guest'; offer: GuestOffer }
  | { name: 'signup' }
  | { name: 'unlock'; username: string; error?: string }
  | { name: 'opening'; message: string }
  | { name: 'wrong-passphrase'; username: string }
  | { name: 'other-tab'; lost: boolean }
  | { name: 'app' }
  | { name: 'failed'; message: string; canRetry: boolean };

type ChatSession = InstanceType<typeof Boot.ChatSession>;

const SESSION_ENDED_TEXT =
  'You were signed out: this session was ended from another device or by the platform’s staff, or your password was changed. ' +
  'Sign in again. Your messages on this browser are kept.';
const SESSION_EXPIRED_TEXT = 'Your session has expired. Sign in again. Your messages on this browser are kept.';

/** A guest invite opened while signed out: its code and what it leads to. */
export interface GuestOffer {
  code: string;
  invite: GuestInvite;
}

/** The invite code of the page's address, if it is an invite link. */
function inviteCode(): string | null {
  if (typeof location === 'undefined') return null;
  const m = /^\/invite\/([^/]+)/.exec(location.pathname);
  return m ? decodeURIComponent(m[1]!) : null;
}

/** Opened from an invite link while signed out: the invite waits behind the sign-in. */
function inviteNotice(): Notice | undefined {
  if (typeof location === 'undefined' || !/^\/invite\/[^/]+/.test(location.pathname)) return undefined;
  return { kind: 'info', text: 'You were invited to a server. Sign in, or create an account, to see the invite and join.' };
}

export class AppController {
  screen = $state<Screen>({ name: 'loading' });
  /** The running chat (once the store is open). */
  chat = $state.raw<ChatSession | null>(null);
  /** The shell component, loaded with the chat. */
  shell = $state.raw<Component<{ chat: ChatSession }> | null>(null);

  readonly #local: LocalState;
  readonly #api: ApiClient;
  #boot: typeof Boot | null = null;
  #session: StoredSession | null = null;
  /** The account password, held only between a sign-in and the store being open. */
  #password: string | null = null;
  #retry: (() => Promise<void>) | null = null;
  /** Signing out: the session's end that it causes is not news. */
  #signingOut = false;

  constructor(storage: Storage = localStorage) {
    this.#local = new LocalState(storage);
    this.#api = new ApiClient({
      onRefreshToken: (token) => {
        if (this.#session) {
          this.#session = { ...this.#session, refreshToken: token };
          this.#local.updateRefreshToken(token);
        }
      },
      onSessionEnded: () => this.sessionEnded('expired'),
    });
  }

  /** First screen: the tab lock, then sign-in or unlock. */
  async init(steal = false): Promise<void> {
    const mine = await acquireTabLock(steal, () => void this.#lostTab());
    if (!mine) {
      this.screen = { name: 'other-tab', lost: false };
      return;
    }
    const stored = this.#local.session();
    if (stored) {
      this.#session = stored;
      this.#api.resume(stored.refreshToken);
      this.screen = { name: 'unlock', username: stored.username };
      // Fetch the chat and the engine while the person types the password.
      this.#preload();
    } else {
      this.screen = { name: 'signin', notice: inviteNotice() };
      void this.#offerGuest();
    }
  }

  /** On an invite link, signed out: a guest invite offers to join without an account. */
  async #offerGuest(): Promise<void> {
    const code = inviteCode();
    if (!code) return;
    const invite = await this.#api.guestInvite(code).catch(() => null);
    if (invite && this.screen.name === 'signin') this.screen = { ...this.screen, guest: { code, invite } };
  }

  showGuest(offer: GuestOffer): void {
    this.screen = { name: 'guest', offer };
  }

  /** Joins by a guest invite with a guest account (throws the API's error for the form to show). */
  async joinAsGuest(code: string, displayName: string, password: string): Promise<void> {
    this.#preload();
    const auth = await this.#api.guestJoin(code, { password, display_name: displayName || null, device_name: deviceName() });
    await this.#afterAuth(auth, password);
  }

  showSignIn(): void {
    this.screen = { name: 'signin' };
  }

  showSignUp(): void {
    this.screen = { name: 'signup' };
  }

  /** Signs in (throws the API's error for the form to show). */
  async signIn(username: string, password: string): Promise<void> {
    this.#preload();
    const auth = await this.#api.login({ username, password, device_name: deviceName() });
    await this.#afterAuth(auth, password);
  }

  /** Creates the account (throws the API's error for the form to show). */
  async signUp(username: string, password: string): Promise<void> {
    this.#preload();
    const auth = await this.#api.register({ username, password, device_name: deviceName() });
    await this.#afterAuth(auth, password);
  }

  async #afterAuth(auth: AuthResponse, password: string): Promise<void> {
    this.#session = {
      username: auth.user.username,
      userId: auth.user.id,
      deviceId: auth.device_id,
      sessionId: auth.session_id,
      refreshToken: auth.refresh_token,
    };
    this.#local.saveSession(this.#session);
    await this.#enter(password, true);
  }

  /** After a reload: the password opens the local store again. */
  async unlock(password: string): Promise<void> {
    // Another tab may have renewed the token since this page loaded: take the latest.
    const stored = this.#local.session();
    if (!stored) return this.showSignIn();
    this.#session = stored;
    this.#api.resume(stored.refreshToken);
    try {
      await this.#api.accessToken();
    } catch (e) {
      if (e instanceof SessionEndedError) return; // sessionEnded() has moved to sign-in
      if (!(e instanceof NetworkError || e instanceof ApiError)) throw e;
      // Offline or the server is busy: open the local history anyway; the gateway will retry.
    }
    await this.#enter(password, false);
  }

  /** Fetches the chat code and the engine while the server checks the password. */
  #preload(): void {
    void this.#loadBoot()
      .then((boot) => boot.preloadEngine())
      .catch(() => undefined);
  }

  async #loadBoot(): Promise<typeof Boot> {
    if (!this.#boot) this.#boot = await import('../features/shell/boot');
    return this.#boot;
  }

  /** Opens the local store with `password` and starts the chat. */
  async #enter(password: string, fromSignIn: boolean): Promise<void> {
    const session = this.#session;
    if (!session) return;
    this.screen = { name: 'opening', message: 'Unlocking your messages…' };
    let boot: typeof Boot;
    try {
      boot = await this.#loadBoot();
    } catch {
      this.#fail('The app could not be loaded. Check your connection and try again.', () => this.#enter(password, fromSignIn));
      return;
    }
    try {
      const engine = await boot.openEngine(this.#api, session, password);
      await this.#launch(boot, engine);
    } catch (e) {
      if (engineErrorKind(e) === 'wrong_passphrase') {
        if (fromSignIn) {
          // The server took this password, so it is the account's: the store was sealed
          // with an earlier one (changed on another device).
          this.#password = password;
          this.screen = { name: 'wrong-passphrase', username: session.username };
        } else {
          this.screen = { name: 'unlock', username: session.username, error: 'Wrong password.' };
        }
        return;
      }
      this.#fail(boot.describeOpenError(e), boot.canRetryOpen(e) ? () => this.#enter(password, fromSignIn) : null);
    }
  }

  async #launch(boot: typeof Boot, engine: Awaited<ReturnType<typeof Boot.openEngine>>): Promise<void> {
    const session = this.#session;
    if (!session) return;
    this.#password = null;
    const chat = new boot.ChatSession({
      api: this.#api,
      engine,
      session,
      onEnded: (why) => this.sessionEnded(why),
      onSignOut: () => this.signOut(),
    });
    this.chat = chat;
    this.shell = boot.Shell as unknown as Component<{ chat: ChatSession }>;
    this.screen = { name: 'app' };
    await chat.start();
  }

  /** The wrong-password screen: the previous password opens the store, which is then re-sealed with the current one. */
  async recoverWithPrevious(previous: string): Promise<string | undefined> {
    const session = this.#session;
    const current = this.#password;
    if (!session || current === null) return 'Sign in again first.';
    const boot = await this.#loadBoot();
    let engine: Awaited<ReturnType<typeof Boot.openEngine>>;
    try {
      engine = await boot.openEngine(this.#api, session, previous);
    } catch (e) {
      if (engineErrorKind(e) === 'wrong_passphrase') return 'That password does not open it either.';
      return boot.describeOpenError(e);
    }
    try {
      await engine.changePassphrase(previous, current);
    } catch (e) {
      await engine.close();
      return `Unlocked, but could not switch it to your current password: ${boot.describeOpenError(e)}`;
    }
    await this.#launch(boot, engine);
    return undefined;
  }

  /** The wrong-password screen's last resort: delete this browser's store and start a new one. */
  async startFresh(): Promise<string | undefined> {
    const session = this.#session;
    const current = this.#password;
    if (!session || current === null) return 'Sign in again first.';
    const boot = await this.#loadBoot();
    try {
      await boot.deleteLocalStore(session.userId);
      const engine = await boot.openEngine(this.#api, session, current);
      await this.#launch(boot, engine);
      return undefined;
    } catch (e) {
      return boot.describeOpenError(e);
    }
  }

  /** Signs out: ends the login session on the server, keeps this browser's local store. */
  async signOut(): Promise<void> {
    const chat = this.chat;
    this.chat = null;
    this.#signingOut = true;
    this.screen = { name: 'opening', message: 'Signing out…' };
    try {
      if (chat) {
        // A linked device leaves the account's device list first (which also ends its session).
        await chat.leave();
        await chat.shutdown();
      }
      if (this.#api.signedIn) await this.#api.logout();
    } catch {
      // Offline: the session stays on the server until it expires or is removed from
      // another device's settings; this browser forgets it either way.
    } finally {
      this.#signingOut = false;
    }
    this.#forget();
    this.screen = { name: 'signin', notice: { kind: 'info', text: 'You signed out.' } };
  }

  /** The login session is over (revoked, expired): back to sign-in, keeping the local store. */
  sessionEnded(why: 'revoked' | 'expired' | string): void {
    // Signing out ends the session on purpose: signOut() moves to sign-in itself.
    if (this.#signingOut) return;
    // The API client and the gateway may both notice: act once.
    if (!this.#session && this.screen.name === 'signin') return;
    // Another tab took over: a late answer here must not clear the session it now holds.
    if (this.screen.name === 'other-tab') return;
    const username = this.#session?.username;
    const chat = this.chat;
    this.chat = null;
    if (chat) void chat.shutdown();
    this.#api.forget();
    this.#forget();
    this.screen = {
      name: 'signin',
      username,
      notice: { kind: 'error', text: why === 'revoked' ? SESSION_ENDED_TEXT : SESSION_EXPIRED_TEXT },
    };
  }

  #forget(): void {
    this.#local.clearSession();
    this.#session = null;
    this.#password = null;
  }

  #fail(message: string, retry: (() => Promise<void>) | null): void {
    this.#retry = retry;
    this.screen = { name: 'failed', message, canRetry: retry !== null };
  }

  async retry(): Promise<void> {
    const retry = this.#retry;
    this.#retry = null;
    if (retry) await retry();
  }

  /** Another tab took over ("Use here" there): stop everything here. */
  async #lostTab(): Promise<void> {
    const chat = this.chat;
    this.chat = null;
    this.#password = null;
    // The other tab uses the refresh token from now on: this one must not spend it.
    this.#api.forget();
    this.screen = { name: 'other-tab', lost: true };
    if (chat) await chat.shutdown();
  }

  /** "Use here": take the tab lock from the other tab. */
  async takeOver(): Promise<void> {
    await this.init(true);
  }
}
