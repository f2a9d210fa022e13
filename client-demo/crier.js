/**
 * crier.js: a browser client for Crier, one ES module with no dependencies.
 * Copy it next to your page.
 *
 *   import { Crier } from "./crier.js";
 *   const client = Crier.connect({ api, stream, token, name });
 *   const stop = client.subscribe(channel, (message) => show(message), { after: lastIdShown });
 *   client.on("state", (state, detail) => ...);
 *   client.post(channel, "hello", "ann");
 *
 * Crier.connect(options)
 *   api       base URL of the chat-service (default "": this origin)
 *   stream    base URL of broadcast-sse (default: api)
 *   token     a token, when the server checks tokens: a Bearer header on
 *             requests, ?access_token= on the stream
 *   name      the name this browser is present under, without a token (tabs
 *             sharing a stream share it: the last one set in any tab)
 *   presence  follow who joins and leaves (default true)
 *   share     let this origin's tabs share one stream (default true)
 *
 * client.subscribe(channel, onMessage, { after }) → unsubscribe()
 *   onMessage gets each message {id, channel, author, text, ts} once, in id
 *   order. `after` is the last id the caller already has (from history, say):
 *   the stream starts after it. Without it, it starts with messages posted
 *   from now on.
 * client.post(channel, text, author?) → outgoing
 *   Messages are sent one at a time, in order. While the server is unreachable,
 *   busy (429) or failing (5xx) a message waits and is sent again, always with
 *   the same Idempotency-Key, so it is stored once. One the server refuses
 *   (other 4xx) is "failed" until outgoing.retry() or outgoing.discard().
 *   outgoing: {key, channel, author, text, state, reason, status, message}
 * client.edit(channel, id, text, author?) → Promise of the edit entry
 * client.remove(channel, id, author?) → Promise of the deletion entry
 *   Only the author (the token's name; without tokens, `author` or the name
 *   set with connect/setName) or an admin may; a refusal rejects the promise
 *   with the server's message. Every tab gets the change as "update" or
 *   "delete".
 * client.typing(channel, author?)
 *   Says the user is typing: at most one POST per channel every 2 s however
 *   often it is called (call it on each keystroke). Best effort: a signal that
 *   fails is not sent again.
 * client.read(channel, id, author?)
 *   Says the user has seen the channel up to message `id`. Calls are gathered:
 *   only the highest id goes, at most about once a second per channel.
 *   Signals are sent as `author` (default: the client's name); with a token
 *   the server takes the token's name.
 * client.history(channel, { limit, after }) → Promise of messages as they
 *   now are (edited ones with their new text and `edited_at`, deleted ones
 *   with `deleted: true` and no text)
 * client.setName(name)   rejoin under another name
 * client.pending         outgoing messages not stored yet
 * client.state           "connecting" | "live" | "reconnecting" | "offline"
 * client.role            "leader" (holds the stream for this origin's tabs),
 *                        "follower" (gets it from the leader) or "alone"
 * client.close()
 * Crier.newChannel()     a new channel id (a random UUID)
 * client.on(event, fn) → off()
 *   "state"     (state, detail) of the stream
 *   "gap"       {channel, from, to}: ids from..=to were removed by retention
 *   "reset"     {channel, last_id}: the server's history was reset or restored;
 *               the channel is replayed from its oldest kept message
 *   "presence"  {channel, names}: who is in the room now
 *   "update"    {id, channel, target, text, author, ts}: message `target` now
 *               reads `text` (also replayed on resume, in id order)
 *   "delete"    {id, channel, target, author, ts}: message `target` was deleted
 *   "signal"    {type: "typing" | "read", channel, author, id?, ts}: someone
 *               of a followed channel is typing, or has read up to `id`
 *               (every tab gets it; never replayed after a reconnect)
 *   "outbox"    (outgoing) changed state: "sending" | "waiting" | "failed" |
 *               "sent" (outgoing.message is the stored one) | "discarded"
 *   "role"      (role)
 *
 * Sharing: browsers give an origin about six HTTP/1.1 connections and each
 * open stream holds one. So the tab holding the Web Lock "crier <stream>
 * <token>" opens ONE stream over every channel some tab follows and relays its
 * events on a BroadcastChannel of the same name; the other tabs tell it what
 * they follow. When that tab closes, another takes the lock and opens the
 * stream again from the last ids the tabs have. A tab drops a message whose id
 * is not above the last one it delivered on that channel, so nothing shows
 * twice. Without Web Locks or BroadcastChannel each tab has its own stream.
 */

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const MAX_RETRY_MS = 30000;
/** How long the stream waits for more changes before it (re)opens. */
const GATHER_MS = 100;
/** What the leader relays to the other tabs. */
const RELAYED = new Set(["message", "update", "delete", "gap", "reset", "presence", "signal", "state"]);
/** Entries of a channel's log besides messages: changes to an earlier one. */
const CHANGES = new Set(["update", "delete"]);
/** A typing signal goes at most this often per channel. */
const TYPING_EVERY_MS = 2000;
/** A read marker goes at most this often per channel (the highest id waits). */
const READ_EVERY_MS = 1000;
/**
 * How long a replaced stream stays open once its successor is live: a signal
 * it was sent just before the successor joined can reach the page after the
 * successor's opening, and no cursor would bring it back.
 */
const RETIRE_AFTER_MS = 2000;
/** Signals remembered while two streams overlap, to pass each only once. */
const OVERLAP_SIGNALS = 256;

export const Crier = Object.freeze({ connect, newChannel: newUuid });
export default Crier;

function connect(options = {}) {
  return new Client(options);
}

class Emitter {
  #listeners = new Map();

  on(event, fn) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    const listener = (...args) => fn(...args);
    this.#listeners.get(event).add(listener);
    return () => this.#listeners.get(event).delete(listener);
  }

  emit(event, ...args) {
    for (const listener of [...(this.#listeners.get(event) || [])]) call(listener, ...args);
  }
}

class Client extends Emitter {
  #config;
  #tab = newUuid();
  /** channel → { last: last id delivered (undefined: none yet), handlers } */
  #channels = new Map();
  #name;
  #state = "connecting";
  #detail = "";
  #role = "alone";
  #outbox;
  #signals;
  /** The stream, while this tab holds it. */
  #leader = null;
  #bus = null;
  /** Aborted by close(): the lock request and the page listeners. */
  #closing = new AbortController();
  #releaseLock = () => {};

  constructor(options) {
    super();
    const api = baseUrl(options.api);
    this.#config = {
      api,
      stream: baseUrl(options.stream) || api,
      token: options.token || "",
      presence: options.presence !== false,
    };
    this.#name = String(options.name || "").trim();
    this.#outbox = new Outbox(this.#config, (outgoing) => this.emit("outbox", outgoing));
    this.#signals = new Signals(this.#config);
    const canShare = typeof BroadcastChannel === "function" && Boolean(globalThis.navigator?.locks);
    if (options.share !== false && canShare) this.#share();
    else this.#lead(null);
  }

  get state() { return this.#state; }
  get role() { return this.#role; }
  get pending() { return this.#outbox.pending.slice(); }

  subscribe(channel, onMessage, { after } = {}) {
    channel = channelId(channel);
    let followed = this.#channels.get(channel);
    if (!followed) {
      const last = Number.isSafeInteger(after) && after >= 0 ? after : undefined;
      followed = { last, handlers: new Set() };
      this.#channels.set(channel, followed);
      this.#send({ type: "follow", tab: this.#tab, channels: { [channel]: last ?? null } });
    }
    const handler = (message) => onMessage(message);
    followed.handlers.add(handler);
    return () => {
      if (!followed.handlers.delete(handler) || followed.handlers.size) return;
      this.#channels.delete(channel);
      this.#send({ type: "unfollow", tab: this.#tab, channel });
    };
  }

  post(channel, text, author) {
    channel = channelId(channel);
    // The next keystroke is a new message being typed: say so at once.
    this.#signals.posted(channel);
    return this.#outbox.post(channel, String(text), author);
  }

  typing(channel, author = this.#name) {
    this.#signals.typing(channelId(channel), author);
  }

  read(channel, id, author = this.#name) {
    this.#signals.read(channelId(channel), id, author);
  }

  edit(channel, id, text, author) {
    return this.#change("PATCH", channel, id, { text: String(text) }, author);
  }

  remove(channel, id, author) {
    return this.#change("DELETE", channel, id, undefined, author);
  }

  /** PATCH or DELETE a message; the stored entry, or the server's refusal. */
  async #change(method, channel, id, body, author) {
    if (!Number.isSafeInteger(id) || id < 1) throw new TypeError(`a message id is a positive integer, not "${id}"`);
    const query = new URLSearchParams();
    const name = String(author ?? this.#name).trim();
    if (!this.#config.token && name) query.set("author", name);
    const url = `${this.#config.api}/channels/${channelId(channel)}/messages/${id}?${query}`;
    const headers = authHeaders(this.#config.token);
    if (body) headers["content-type"] = "application/json";
    const response = await fetch(url, { method, headers, body: body && JSON.stringify(body) });
    if (!response.ok) throw new Error(await errorMessage(response));
    return response.json();
  }

  async history(channel, { limit = 50, after } = {}) {
    const query = new URLSearchParams({ limit: String(limit) });
    if (after !== undefined) query.set("after", String(after));
    const url = `${this.#config.api}/channels/${channelId(channel)}/messages?${query}`;
    const response = await fetch(url, { headers: authHeaders(this.#config.token) });
    if (!response.ok) throw new Error(await errorMessage(response));
    const body = await response.json();
    return Array.isArray(body.messages) ? body.messages : [];
  }

  setName(name) {
    name = String(name || "").trim();
    if (name === this.#name) return;
    this.#name = name;
    this.#send({ type: "name", name });
  }

  close() {
    if (this.#closing.signal.aborted) return;
    this.#send({ type: "bye", tab: this.#tab });
    this.#closing.abort();
    this.#releaseLock();
    this.#leader?.close();
    this.#bus?.close();
    this.#outbox.close();
    this.#signals.close();
  }

  /** Waits for the lock as a follower; takes the stream when it gets it. */
  #share() {
    const key = `crier ${this.#config.stream} ${this.#config.token}`;
    this.#bus = new BroadcastChannel(key);
    this.#bus.onmessage = (event) => this.#heard(event.data);
    const { signal } = this.#closing;
    const lock = { mode: "exclusive", signal };
    // Held for the tab's life: the browser releases it when the tab goes.
    navigator.locks
      .request(key, lock, () => new Promise((release) => {
        this.#releaseLock = release;
        this.#lead(this.#bus);
      }))
      .catch(() => { /* closed before it got the lock */ });
    this.#setRole("follower");
    this.#announce();
    addEventListener("pagehide", () => this.#send({ type: "bye", tab: this.#tab }), { signal });
    addEventListener("pageshow", (event) => event.persisted && this.#announce(), { signal });
  }

  #lead(bus) {
    const relay = (kind, data) => {
      this.#receive(kind, data);
      bus?.postMessage({ type: kind, data });
    };
    const state = this.#state === "connecting" ? "connecting" : "reconnecting";
    this.#leader = new Leader(this.#config, relay, { shared: Boolean(bus), name: this.#name, state });
    this.#setRole(bus ? "leader" : "alone");
    this.#announce();
    // The other tabs answer with what they follow and the last ids they have.
    bus?.postMessage({ type: "leader" });
  }

  /** Tells the leader every channel this tab follows and where it is. */
  #announce() {
    const channels = {};
    for (const [channel, followed] of this.#channels) channels[channel] = followed.last ?? null;
    this.#send({ type: "follow", tab: this.#tab, channels });
  }

  #send(request) {
    if (this.#closing.signal.aborted) return;
    if (this.#leader) this.#leader.request(request);
    else this.#bus?.postMessage(request);
  }

  #heard(message) {
    if (!message || typeof message !== "object" || this.#closing.signal.aborted) return;
    if (this.#leader) {
      if (!RELAYED.has(message.type)) this.#leader.request(message);
    } else if (message.type === "leader") {
      this.#announce();
    } else if (RELAYED.has(message.type)) {
      this.#receive(message.type, message.data);
    }
  }

  /** An event of the stream, from this tab's stream or relayed by the leader. */
  #receive(kind, data) {
    if (!data || typeof data !== "object") return;
    if (kind === "state") {
      const { state, detail = "" } = data;
      if (state === this.#state && detail === this.#detail) return;
      const cameBack = state === "live" && this.#state !== "live";
      this.#state = state;
      this.#detail = detail;
      this.emit("state", state, detail);
      // Messages that waited for the server go as soon as it is back.
      if (cameBack) this.#outbox.flush();
      return;
    }
    const followed = this.#channels.get(data.channel);
    if (!followed) return;
    const last = followed.last ?? -1;
    if (kind === "message") {
      if (!Number.isSafeInteger(data.id) || data.id <= last) return;
      followed.last = data.id;
      for (const handler of [...followed.handlers]) call(handler, data);
    } else if (CHANGES.has(kind)) {
      if (!Number.isSafeInteger(data.id) || data.id <= last || !Number.isSafeInteger(data.target)) return;
      followed.last = data.id;
      this.emit(kind, data);
    } else if (kind === "gap") {
      if (!Number.isSafeInteger(data.from) || !Number.isSafeInteger(data.to) || data.to <= last) return;
      followed.last = data.to;
      this.emit("gap", { ...data, from: Math.max(data.from, last + 1) });
    } else if (kind === "reset") {
      followed.last = 0;
      this.emit("reset", data);
    } else if (kind === "presence") {
      this.emit("presence", data);
    } else if (kind === "signal") {
      this.emit("signal", data);
    }
  }

  #setRole(role) {
    this.#role = role;
    this.emit("role", role);
  }
}

/** The tab holding the stream: it follows every channel some tab follows. */
class Leader {
  constructor(config, deliver, options) {
    this.stream = new Stream(config, deliver, options);
    /** tab → the channels it follows */
    this.tabs = new Map();
  }

  request(message) {
    const { type, tab } = message;
    if (type === "follow") {
      if (!this.tabs.has(tab)) this.tabs.set(tab, new Set());
      for (const [channel, after] of Object.entries(message.channels || {})) {
        if (!UUID.test(channel)) continue;
        this.tabs.get(tab).add(channel);
        this.stream.want(channel, Number.isSafeInteger(after) ? after : undefined);
      }
      this.stream.greet();
    } else if (type === "unfollow") {
      this.tabs.get(tab)?.delete(message.channel);
      this.prune();
    } else if (type === "bye") {
      this.tabs.delete(tab);
      this.prune();
    } else if (type === "name") {
      this.stream.setName(String(message.name || ""));
    }
  }

  /** Leaves the channels no tab follows any more. */
  prune() {
    const followed = new Set();
    for (const channels of this.tabs.values()) for (const channel of channels) followed.add(channel);
    for (const channel of this.stream.channels()) if (!followed.has(channel)) this.stream.drop(channel);
  }

  close() {
    this.stream.close();
  }
}

/**
 * One EventSource over a set of channels. It keeps the last id seen on each, so
 * it reopens (a channel more or less, another name, after a failure) where it
 * left off.
 */
class Stream {
  /** channel → last id seen (undefined: from when the stream opened) */
  last = new Map();
  /** channel → the names present */
  names = new Map();
  /** channels whose presence the open stream has told */
  told = new Set();
  source = null;
  /** the stream being replaced, kept for its signals until after `source` opens */
  retiring = null;
  retireTimer = 0;
  /** the data of signals passed on while `retiring` is open (both streams carry them) */
  overlapSignals = new Set();
  timer = 0;
  retries = 0;
  state = "";
  detail = "";
  listening = new AbortController();

  constructor(config, deliver, { shared, name, state }) {
    this.config = config;
    this.deliver = deliver;
    this.shared = shared;
    this.name = name;
    this.everLive = state !== "connecting";
    const { signal } = this.listening;
    addEventListener("online", () => {
      if (this.source?.readyState !== EventSource.OPEN) this.open();
    }, { signal });
    addEventListener("offline", () => this.setState("offline", "this device is offline"), { signal });
    this.setState(state);
  }

  channels() {
    return [...this.last.keys()];
  }

  /** Follows `channel` from after `after`, or from further back than now. */
  want(channel, after) {
    const known = this.last.has(channel);
    const last = this.last.get(channel);
    if (known && (after === undefined || (last !== undefined && after >= last))) return;
    this.last.set(channel, after);
    this.schedule(GATHER_MS);
  }

  drop(channel) {
    if (!this.last.delete(channel)) return;
    this.names.delete(channel);
    this.schedule(GATHER_MS);
  }

  setName(name) {
    if (name === this.name) return;
    this.name = name;
    if (this.last.size && !this.config.token) this.schedule(GATHER_MS);
  }

  /** Tells a tab that just came what the others know: the state and who is present. */
  greet() {
    this.setState(this.state, this.detail);
    for (const [channel, names] of this.names) this.deliver("presence", { channel, names: sorted(names) });
  }

  schedule(delay) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.open(), delay);
  }

  open() {
    clearTimeout(this.timer);
    this.retire(this.source);
    this.source = null;
    this.told.clear();
    const channels = this.channels();
    if (!channels.length) return this.retire(null);
    // A tab alone on one channel takes the single-channel route every server has.
    const single = !this.shared && channels.length === 1 ? channels[0] : undefined;
    const source = new EventSource(this.url(channels, single));
    this.source = source;
    const on = (kind, handle) => source.addEventListener(kind, (event) => {
      const data = this.passes(source, kind, event.data) && parse(event.data);
      if (data && typeof data === "object") handle({ channel: single, ...data });
    });
    source.onopen = () => {
      this.retireSoon();
      this.retries = 0;
      this.everLive = true;
      this.setState("live");
    };
    source.onerror = () => this.failed(source);
    on("message", (message) => this.seen(message.channel, message.id, "message", message));
    for (const kind of CHANGES) on(kind, (change) => this.seen(change.channel, change.id, kind, change));
    on("gap", (gap) => this.seen(gap.channel, gap.to, "gap", gap));
    on("reset", (reset) => {
      if (!this.last.has(reset.channel)) return;
      // The channel comes again from its oldest kept message.
      this.last.set(reset.channel, 0);
      this.deliver("reset", reset);
    });
    on("presence", (change) => this.presence(change));
    // No id: a signal moves no cursor and is never asked for again.
    on("signal", (signal) => this.last.has(signal.channel) && this.deliver("signal", signal));
    // The server ends a stream it cannot continue; resuming from the last ids is lossless.
    on("reconnect", () => this.reopenLater("the server asked to reconnect"));
  }

  url(channels, single) {
    const query = new URLSearchParams();
    let path = "/events";
    if (single) {
      path = `/channels/${single}/events`;
      if (this.last.get(single) !== undefined) query.set("last_event_id", this.last.get(single));
    } else {
      for (const channel of channels) query.append("channel", channel);
      // The cursor: "<first 8 hex digits of the channel>:<last id>" for each
      // channel with a known place; the others start from now on.
      const cursor = channels
        .filter((channel) => this.last.get(channel) !== undefined)
        .map((channel) => `${channel.slice(0, 8)}:${this.last.get(channel)}`);
      if (cursor.length) query.set("last_event_id", cursor.join(","));
    }
    if (this.config.token) query.set("access_token", this.config.token);
    else if (this.name) query.set("name", this.name);
    if (this.config.presence) query.set("presence", "1");
    return `${this.config.stream}${path}?${query}`;
  }

  seen(channel, id, kind, data) {
    if (!this.last.has(channel) || !Number.isSafeInteger(id)) return;
    this.last.set(channel, Math.max(this.last.get(channel) ?? 0, id));
    this.deliver(kind, data);
  }

  presence(change) {
    const { channel } = change;
    if (!this.last.has(channel)) return;
    // A stream's first presence event on a channel lists everyone there.
    const names = this.told.has(channel) ? this.names.get(channel) : new Set();
    this.told.add(channel);
    for (const name of listOf(change.joined)) names.add(String(name));
    for (const name of listOf(change.left)) names.delete(String(name));
    this.names.set(channel, names);
    this.deliver("presence", { channel, names: sorted(names) });
  }

  failed(source) {
    if (source === this.retiring) return this.retire(null);
    if (source !== this.source) return;
    if (!navigator.onLine) {
      this.setState("offline", "this device is offline");
    } else if (source.readyState === EventSource.CLOSED) {
      this.reopenLater("the stream failed");
    } else {
      this.setState(this.everLive ? "reconnecting" : "connecting");
    }
  }

  /**
   * Whether an event of `source` goes on: everything of the current stream.
   * A retiring stream still passes signals, which no cursor brings back (the
   * new one resumes everything else from the last ids); while both are open
   * they carry the same signals, and each goes on once. A signal's JSON holds
   * its author and the millisecond it was accepted, so equal data is the
   * same signal.
   */
  passes(source, kind, data) {
    const current = source === this.source;
    if (kind !== "signal" || (!current && source !== this.retiring)) return current;
    if (!this.retiring) return true;
    if (this.overlapSignals.has(data)) return false;
    if (this.overlapSignals.size >= OVERLAP_SIGNALS) this.overlapSignals.clear();
    this.overlapSignals.add(data);
    return true;
  }

  /**
   * Keeps `source`, the stream being replaced, open for its signals until
   * a while after its successor is live (null: closes the one kept now). A
   * replaced stream that was not open yet passes nothing: it is closed, and
   * the one kept before it stays.
   */
  retire(source) {
    if (source?.readyState !== EventSource.OPEN) {
      source?.close();
      if (source) return;
    }
    clearTimeout(this.retireTimer);
    if (this.retiring !== source) this.retiring?.close();
    this.retiring = source;
    this.overlapSignals.clear();
  }

  /** The successor is live: the stream kept closes once the signals on their way came. */
  retireSoon() {
    if (!this.retiring) return;
    clearTimeout(this.retireTimer);
    this.retireTimer = setTimeout(() => this.retire(null), RETIRE_AFTER_MS);
  }

  /** Reopens the stream ourselves, for when the browser stopped retrying. */
  reopenLater(why) {
    this.retire(null);
    this.source?.close();
    const delay = Math.min(MAX_RETRY_MS, 1000 * 2 ** this.retries++);
    const state = !navigator.onLine ? "offline" : this.everLive ? "reconnecting" : "connecting";
    this.setState(state, `${why}; retrying in ${Math.round(delay / 1000)} s`);
    this.schedule(delay);
  }

  setState(state, detail = "") {
    this.state = state;
    this.detail = detail;
    this.deliver("state", { state, detail });
  }

  close() {
    clearTimeout(this.timer);
    this.retire(null);
    this.source?.close();
    this.listening.abort();
  }
}

/** Messages waiting to be stored, sent one at a time in the order written. */
class Outbox {
  pending = [];
  timer = 0;
  retries = 0;
  flushing = false;
  listening = new AbortController();

  constructor(config, changed) {
    this.config = config;
    this.changed = changed;
    addEventListener("online", () => this.flush(), { signal: this.listening.signal });
  }

  post(channel, text, author) {
    const outgoing = {
      key: newUuid(), channel, author, text, state: "", reason: "", status: 0, message: null,
      retry: () => {
        if (outgoing.state !== "failed") return;
        this.mark(outgoing, "sending");
        this.flush();
      },
      discard: () => {
        if (outgoing.state !== "sending") this.forget(outgoing, "discarded");
      },
    };
    this.pending.push(outgoing);
    this.mark(outgoing, "sending");
    this.flush();
    return outgoing;
  }

  async flush() {
    if (this.flushing) return;
    this.flushing = true;
    clearTimeout(this.timer);
    try {
      let outgoing;
      while ((outgoing = this.pending.find((o) => o.state !== "failed"))) {
        if (!(await this.attempt(outgoing))) {
          const delay = Math.min(MAX_RETRY_MS, 1000 * 2 ** this.retries++);
          this.timer = setTimeout(() => this.flush(), delay);
          return;
        }
      }
      this.retries = 0;
    } finally {
      this.flushing = false;
    }
  }

  /** One attempt; false when the message should be tried again later. */
  async attempt(outgoing) {
    this.mark(outgoing, "sending");
    let response;
    try {
      response = await fetch(`${this.config.api}/channels/${outgoing.channel}/messages`, {
        method: "POST",
        // The same key on every attempt: the server stores a retried message once.
        headers: {
          ...authHeaders(this.config.token),
          "content-type": "application/json",
          "idempotency-key": outgoing.key,
        },
        body: JSON.stringify({ author: outgoing.author, text: outgoing.text }),
      });
      if (response.ok) outgoing.message = parse(await response.text());
    } catch (_) {
      this.mark(outgoing, "waiting", "the server is unreachable", 0);
      return false;
    }
    if (response.ok) {
      this.forget(outgoing, "sent");
      return true;
    }
    const reason = await errorMessage(response);
    if (response.status === 429 || response.status >= 500) {
      this.mark(outgoing, "waiting", reason, response.status);
      return false;
    }
    this.mark(outgoing, "failed", reason, response.status);
    return true;
  }

  mark(outgoing, state, reason = "", status = 0) {
    Object.assign(outgoing, { state, reason, status });
    this.changed(outgoing);
  }

  forget(outgoing, state) {
    const at = this.pending.indexOf(outgoing);
    if (at >= 0) this.pending.splice(at, 1);
    this.mark(outgoing, state);
  }

  close() {
    clearTimeout(this.timer);
    this.listening.abort();
  }
}

/**
 * Typing signals and read markers: throttled per channel, sent once, never
 * queued behind messages or retried (the next one says the same again).
 */
class Signals {
  /** channel → when its last typing signal went */
  typed = new Map();
  /** channel → {id, author, sent, at, timer}: the read marker to send */
  reads = new Map();

  constructor(config) {
    this.config = config;
  }

  typing(channel, author) {
    const now = Date.now();
    if (now - (this.typed.get(channel) ?? -Infinity) < TYPING_EVERY_MS) return;
    this.typed.set(channel, now);
    this.send(channel, { type: "typing", author });
  }

  posted(channel) {
    this.typed.delete(channel);
  }

  read(channel, id, author) {
    if (!Number.isSafeInteger(id) || id < 1) return;
    let read = this.reads.get(channel);
    if (!read) {
      read = { id: 0, author, sent: 0, at: -Infinity, timer: 0 };
      this.reads.set(channel, read);
    }
    if (id <= Math.max(read.id, read.sent)) return;
    Object.assign(read, { id, author });
    if (read.timer) return;
    const wait = Math.max(0, read.at + READ_EVERY_MS - Date.now());
    read.timer = setTimeout(() => {
      Object.assign(read, { timer: 0, at: Date.now(), sent: read.id });
      this.send(channel, { type: "read", id: read.id, author: read.author });
    }, wait);
  }

  send(channel, signal) {
    const author = String(signal.author || "").trim();
    // Without a token the server needs a name to say who it is.
    if (!author && !this.config.token) return;
    fetch(`${this.config.api}/channels/${channel}/signals`, {
      method: "POST",
      headers: { ...authHeaders(this.config.token), "content-type": "application/json" },
      body: JSON.stringify({ ...signal, author: author || undefined }),
    }).catch(() => { /* best effort: the next signal says the same */ });
  }

  close() {
    for (const read of this.reads.values()) clearTimeout(read.timer);
  }
}

function channelId(channel) {
  const id = String(channel).toLowerCase();
  if (!UUID.test(id)) throw new TypeError(`a channel is a UUID, not "${channel}"`);
  return id;
}

function baseUrl(value) {
  return String(value || "").trim().replace(/\/+$/, "");
}

function authHeaders(token) {
  return token ? { authorization: `Bearer ${token}` } : {};
}

/** The message of our JSON error body, or the status line. */
async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body?.error?.message) return body.error.message;
  } catch (_) { /* not our JSON error body */ }
  return `the server answered ${response.status} ${response.statusText}`.trim();
}

function parse(text) {
  try { return JSON.parse(text); } catch (_) { return null; }
}

function listOf(value) {
  return Array.isArray(value) ? value : [];
}

function sorted(names) {
  return [...names].sort((a, b) => a.localeCompare(b));
}

/** Runs a caller's function; its error is reported, and the others still run. */
function call(fn, ...args) {
  try {
    fn(...args);
  } catch (error) {
    setTimeout(() => { throw error; });
  }
}

function newUuid() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
