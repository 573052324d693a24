// trio-chat page: plain JavaScript, no build step. Protocol: docs/protocol.md.
// Every piece of text from the network goes into the page with textContent (links are
// built as elements too), never as HTML.
"use strict";

(() => {
  const NAME_KEY = "trio-chat.name";
  // The seat's resume token (welcome.resume), per tab: a reload within the server's
  // grace takes the seat back, with no left/joined notices for the others.
  const RESUME_KEY = "trio-chat.resume";
  // The account's login token (the "token" message), shared by this browser's tabs: a
  // reload or a lost connection logs in with it instead of the password.
  const ACCOUNT_KEY = "trio-chat.token";
  // The errors of a login or registration (docs/protocol.md, Accounts): the dialog
  // shows them.
  const ACCOUNT_ERRORS = new Set(["login_failed", "name_registered", "password_invalid",
    "registration_closed", "invite_invalid", "rate_limited", "tls_required", "not_logged_in"]);
  const MIN_PASSWORD = 8;
  const MAX_PASSWORD = 256;
  const RESUMED_ELSEWHERE = 4009; // close code: another connection took our seat
  // The rooms this browser was in (a reload goes back to them), and the room rules of
  // docs/protocol.md (Rooms).
  const ROOMS_KEY = "trio-chat.rooms";
  const LOBBY = "#lobby";
  const ROOM_PATTERN = /^#[A-Za-z0-9_.-]{1,32}$/;
  const MAX_ROOMS = 50; // a server's default per connection
  const MAX_DIRECT = 50; // direct conversations kept; the idlest one goes
  const MAX_USERS = 10000; // names kept of one room's list
  // A room's welcome says "op" or "admin" to those who may moderate it.
  const ROLES = new Set(["op", "admin"]);
  // The moderation menu on a user: the message each button sends (mute: 10 minutes).
  const MOD_ACTIONS = [
    ["kick", "Kick"], ["mute", "Mute 10 min"], ["ban", "Ban"], ["op", "Make op"],
  ];
  const BANNED = 4003; // close code: banned from the server (the error said why)
  const MAX_NAME = 32;
  const DEFAULT_MAX_TEXT = 4096; // until the server's welcome says its max_text
  const MAX_SHOWN = 1000; // messages kept on screen; older ones are dropped
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const PING_MS = 25000; // keeps idle proxies from closing the connection
  const NEAR_BOTTOM_PX = 40; // this close to the end counts as reading the newest
  const NAME_RETRIES = 5; // reconnects that may meet our own stale session's name
  const NEAR_LIMIT = 0.9; // the character count shows from this share of max_text

  const $ = (id) => document.getElementById(id);
  const ui = {
    state: $("state"),
    online: $("online"),
    count: $("count"),
    me: $("me"),
    messages: $("messages"),
    jump: $("jump"),
    userList: $("user-list"),
    rooms: $("rooms"),
    roomList: $("room-list"),
    roomForm: $("room-form"),
    roomName: $("room-name"),
    roomOptions: $("room-options"),
    roomError: $("room-error"),
    roomsToggle: $("rooms-toggle"),
    unreadAll: $("unread-all"),
    roomTitle: $("room-title"),
    topic: $("topic"),
    part: $("part"),
    composer: $("composer"),
    text: $("text"),
    limit: $("limit"),
    send: $("send"),
    join: $("join"),
    joinForm: $("join-form"),
    joinTitle: $("join-title"),
    joinSubmit: $("join-submit"),
    name: $("name"),
    joinError: $("join-error"),
    joinCancel: $("join-cancel"),
    modes: $("modes"),
    password: $("password"),
    invite: $("invite"),
    offerLogin: $("offer-login"),
    accountInfo: $("account-info"),
    logout: $("logout"),
  };

  const chat = {
    ws: null, // the current WebSocket, or null
    answered: false, // the server has said something on the current socket
    name: null, // the name we join (or joined) with; null until one is chosen
    nameOk: false, // the name is one to join with (not refused): else the dialog asks
    joined: false, // welcome received on the current socket
    everJoined: false, // joined at least once since the page loaded
    attempt: 0, // reconnects since the last answer, for the backoff
    nameTyped: false, // the name was just typed in (not remembered): a clash is news
    nameConflicts: 0,
    timer: null, // pending reconnect
    retryAt: 0, // when it fires (ms since the epoch), for the countdown
    retryLabel: "offline", // what the state says while waiting to retry
    entering: [LOBBY], // the rooms the current join enters, its own room first
    lastIds: new Map(), // per room (its key): the newest id seen there, for "since"
    rooms: [], // the rooms we are in (as the server names them), from their welcomes
    wanted: [], // the rooms to be in (entered, or asked for): every join enters them
    switchTo: null, // a room asked for: shown once its welcome comes
    maxText: DEFAULT_MAX_TEXT,
    // Chats shown without an id (a cluster server cut off from Redis sends those), by
    // user, text and timestamp: their later copy with an id is the same message.
    unconfirmed: new Set(),
    users: [],
    account: null, // the account we are logged in to (welcome.account), or null
    // A login or registration asked for in the dialog ({type, user, password, invite}):
    // the next join sends it; dropped at its welcome or its error.
    credentials: null,
    sentToken: false, // the last join logged in with the kept token
  };

  // Conversations: one per room we are in, one per person we message ("@Bob"). Each
  // keeps its own messages (at most MAX_SHOWN), unread count, topic and members; the
  // current one's messages are the ones in the list.
  const conversations = new Map();
  let current = null;
  let clock = 0; // orders direct conversations by their last message

  // The message list follows new messages while the reader is at its end ("stuck"),
  // through resizes and rotations too; scrolled up, it counts what arrived below.
  const view = { stuck: true, unseen: 0 };

  // ------------------------------------------------------------ helpers

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  const str = (value) => (typeof value === "string" ? value : "");
  const fold = (name) => str(name).toLowerCase();
  // Characters as the server counts them (code points, not UTF-16 units).
  const length = (text) => [...text].length;
  const roomKey = (room) => room.toLowerCase();
  const isRoom = (value) => typeof value === "string" && ROOM_PATTERN.test(value);
  // What a person types as a room: "dev" means "#dev"; null if it is not a room name.
  function parseRoom(text) {
    let name = str(text).trim();
    if (name && !name.startsWith("#")) name = `#${name}`;
    return isRoom(name) ? name : null;
  }
  // A message for a room: without "room" it means #lobby (the v1 protocol).
  function inRoom(message, room) {
    if (room && roomKey(room) !== roomKey(LOBBY)) message.room = room;
    return message;
  }
  const roomOf = (message) => (isRoom(message.room) ? message.room : LOBBY);

  function loadRooms() {
    try {
      const rooms = JSON.parse(localStorage.getItem(ROOMS_KEY) || "[]");
      return Array.isArray(rooms) ? rooms.filter(isRoom).slice(0, MAX_ROOMS) : [];
    } catch {
      return [];
    }
  }

  function saveRooms() {
    try {
      localStorage.setItem(ROOMS_KEY, JSON.stringify(chat.wanted.slice(0, MAX_ROOMS)));
    } catch {
      // storage disabled: a reload starts in #lobby
    }
  }

  function loadName() {
    try {
      return localStorage.getItem(NAME_KEY);
    } catch {
      return null; // storage disabled: ask every time
    }
  }

  function saveName(name) {
    try {
      localStorage.setItem(NAME_KEY, name);
    } catch {
      // storage disabled
    }
  }

  function loadResume() {
    try {
      return sessionStorage.getItem(RESUME_KEY);
    } catch {
      return null;
    }
  }

  function loadAccountToken() {
    try {
      return localStorage.getItem(ACCOUNT_KEY);
    } catch {
      return null;
    }
  }

  function saveAccountToken(token) {
    try {
      if (token) localStorage.setItem(ACCOUNT_KEY, token);
      else localStorage.removeItem(ACCOUNT_KEY);
    } catch {
      // storage disabled: a reload asks for the password again
    }
  }

  function saveResume(token) {
    try {
      if (token) sessionStorage.setItem(RESUME_KEY, token);
      else sessionStorage.removeItem(RESUME_KEY);
    } catch {
      // storage disabled: a reload is a new join
    }
  }

  function hue(name) {
    let h = 0;
    for (const ch of fold(name)) h = (h * 31 + ch.codePointAt(0)) % 360;
    return h;
  }

  function timeOf(timestamp) {
    // The browser's own locale and its usual style ("6:43 PM", "18:43"); the date
    // too when it is not today's (history from earlier days).
    const node = el("time");
    const date = new Date(str(timestamp));
    if (!Number.isNaN(date.getTime())) {
      const today = date.toDateString() === new Date().toDateString();
      node.dateTime = date.toISOString();
      node.textContent = today
        ? date.toLocaleTimeString([], { timeStyle: "short" })
        : date.toLocaleString([], { dateStyle: "short", timeStyle: "short" });
      node.title = date.toLocaleString([], { dateStyle: "full", timeStyle: "medium" });
    }
    return node;
  }

  // http(s) URLs in chat text become links. What a URL may hold is wide; a closing
  // bracket counts only when its opening one is in the URL, and punctuation at the end
  // belongs to the sentence.
  const URL_PATTERN = /\bhttps?:\/\/[^\s<>"]+/gi;
  const CLOSERS = { ")": "(", "]": "[", "}": "{" };

  function trimUrl(url) {
    let end = url.length;
    for (;;) {
      const last = url[end - 1];
      if (".,;:!?'*".includes(last)) {
        end -= 1;
      } else if (last in CLOSERS) {
        const body = url.slice(0, end);
        const opened = body.split(CLOSERS[last]).length - 1;
        const closed = body.split(last).length - 1;
        if (closed <= opened) break;
        end -= 1;
      } else {
        break;
      }
    }
    return url.slice(0, end);
  }

  function linkify(text) {
    const out = document.createDocumentFragment();
    let done = 0;
    for (const match of text.matchAll(URL_PATTERN)) {
      const url = trimUrl(match[0]);
      let href = null;
      try {
        const parsed = new URL(url);
        if (parsed.protocol === "http:" || parsed.protocol === "https:") href = parsed.href;
      } catch {
        href = null; // not a URL after all: stays text
      }
      if (href === null) continue;
      out.append(text.slice(done, match.index));
      const link = el("a", "", url);
      link.href = href;
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      out.append(link);
      done = match.index + url.length;
    }
    out.append(text.slice(done));
    return out;
  }

  // ------------------------------------------------------------ connection

  function wsUrl() {
    // Same host, port and path as the page, so it works behind any proxy.
    const url = new URL(".", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.search = "";
    url.hash = "";
    return url.href;
  }

  function setState(kind, label, detail) {
    ui.state.dataset.state = kind;
    ui.state.textContent = label;
    if (detail) ui.state.append(el("span", "detail", ` · ${detail}`));
    document.body.dataset.state = kind;
    updateComposer();
  }

  function showRetry() {
    const seconds = Math.max(1, Math.ceil((chat.retryAt - Date.now()) / 1000));
    const kind = chat.retryLabel === "offline" ? "offline" : "connecting";
    setState(kind, chat.retryLabel, `retry in ${seconds} s`);
  }

  function send(message) {
    if (!chat.ws || chat.ws.readyState !== WebSocket.OPEN) return false;
    chat.ws.send(JSON.stringify(message));
    return true;
  }

  // The one place a join (first, typed, or after a reconnect) is built: what a rejoin
  // carries to resume goes here. A login or registration typed in the dialog goes
  // first; then the resume token (kept in this tab across reloads) takes the seat back,
  // logged in if it was; then the account's token (kept by the browser) logs in again;
  // else a guest join. "since" asks only for what this page has not shown (after a
  // reload it shows nothing yet: the usual replay).
  // The first room goes in the join; the others follow its welcome (enterOthers).
  function joinMessage() {
    const rooms = chat.entering;
    const resume = loadResume();
    const token = loadAccountToken();
    let join = { type: "join", user: chat.name, batch: true };
    if (chat.credentials) join = { ...chat.credentials, batch: true };
    else if (resume) join.resume = resume;
    else if (token) join = { type: "login", token, batch: true };
    chat.sentToken = "token" in join;
    inRoom(join, rooms[0]);
    const since = chat.lastIds.get(roomKey(rooms[0]));
    if (chat.everJoined && since !== undefined) join.since = since;
    return join;
  }

  // Join (with the name): the rooms to enter are fixed now, and the welcomes list the
  // ones we are in again.
  function startJoin() {
    chat.entering = roomsToEnter();
    chat.rooms = [];
    return send(joinMessage());
  }

  // The rooms to be in after a (re)join: the current one first.
  function roomsToEnter() {
    const rooms = [...chat.wanted];
    if (!rooms.length) rooms.push(LOBBY);
    if (current && current.room) {
      const at = rooms.findIndex((room) => roomKey(room) === current.key);
      if (at > 0) rooms.unshift(...rooms.splice(at, 1));
    }
    return rooms;
  }

  // After the first welcome on a socket: the other rooms, each asking for what it has
  // not shown (a room a resumed seat is still in answers with its welcome again).
  function enterOthers(rooms) {
    for (const room of rooms) {
      if (chat.rooms.some((mine) => roomKey(mine) === roomKey(room))) continue;
      const join = { type: "join", room };
      const since = chat.lastIds.get(roomKey(room));
      if (since !== undefined) join.since = since;
      send(join);
    }
  }

  function connect() {
    clearTimeout(chat.timer);
    chat.timer = null;
    if (chat.ws) return;
    setState("connecting", "connecting…");
    let ws;
    try {
      ws = new WebSocket(wsUrl());
    } catch {
      scheduleReconnect("offline");
      return;
    }
    chat.ws = ws;
    chat.answered = false;
    ws.onopen = () => {
      if (chat.ws !== ws) return;
      // With a name, join; without one yet, ask who is there while the person types it.
      if (chat.nameOk) startJoin();
      else send({ type: "who" });
    };
    ws.onmessage = (event) => {
      if (chat.ws !== ws || typeof event.data !== "string") return;
      if (!chat.answered) onFirstAnswer();
      // With "batch": true one frame may carry several messages, one per line.
      for (const line of event.data.split("\n")) {
        if (!line.trim()) continue;
        let message;
        try {
          message = JSON.parse(line);
        } catch {
          continue;
        }
        if (message && typeof message === "object" && !Array.isArray(message)) {
          try {
            handle(message);
          } catch (error) {
            console.error("trio-chat: cannot show message", message, error);
          }
        }
        if (chat.ws !== ws) return; // the message closed this socket
      }
    };
    ws.onclose = (event) => {
      if (chat.ws !== ws) return;
      const joined = chat.joined;
      chat.ws = null;
      chat.joined = false;
      if (event.code === RESUMED_ELSEWHERE) {
        // This tab was duplicated, and the copy took the seat: do not take it back.
        append(el("li", "notice", "This chat went on in another tab or window."), {});
        setState("offline", "offline", "click to reconnect");
        return;
      }
      if (event.code === BANNED) {
        // Coming back would be refused again: stay offline (the error said why).
        setState("offline", "banned");
        return;
      }
      if (joined) append(el("li", "notice", "Connection lost; reconnecting…"), {});
      scheduleReconnect("offline");
    };
  }

  function onFirstAnswer() {
    chat.answered = true;
    setState("online", "online");
  }

  function disconnect() {
    const ws = chat.ws;
    chat.ws = null;
    chat.joined = false;
    if (ws) ws.close(1000, "bye");
  }

  function scheduleReconnect(label) {
    if (chat.timer !== null) return;
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** chat.attempt);
    const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
    chat.attempt += 1;
    chat.retryAt = Date.now() + delay;
    chat.retryLabel = label;
    showRetry();
    chat.timer = setTimeout(connect, delay);
  }

  function reconnectNow() {
    if (chat.ws) return;
    chat.attempt = 0;
    connect();
  }

  // ------------------------------------------------------------ incoming

  function handle(message) {
    switch (message.type) {
      case "welcome":
        return onWelcome(message);
      case "chat":
        return onChat(message);
      case "system":
        return onSystem(message);
      case "users":
        return onUsers(message);
      case "msg":
        return onDirect(message);
      case "rooms":
        return onRooms(message);
      case "token":
        return onToken(message);
      case "error":
        return onError(message);
      case "history_end":
        // Everything up to last_id has been seen (or was before our time):
        // resume from there even if the room was quiet.
        if (Number.isInteger(message.last_id)) sawId(roomOf(message), message.last_id);
        return undefined;
      default:
        // pong and types this page does not know yet
        return undefined;
    }
  }

  function sawId(room, id) {
    const key = roomKey(room);
    if (!chat.rooms.some((mine) => roomKey(mine) === key)) return;
    chat.lastIds.set(key, Math.max(chat.lastIds.get(key) ?? 0, id));
  }

  function inRooms(room) {
    return chat.rooms.some((mine) => roomKey(mine) === roomKey(room));
  }

  function onWelcome(message) {
    const room = roomOf(message);
    if (!inRooms(room)) {
      if (chat.rooms.length >= MAX_ROOMS) return; // a server that says more: ignored
      chat.rooms.push(room);
      if (!chat.wanted.some((mine) => roomKey(mine) === roomKey(room))) chat.wanted.push(room);
      saveRooms();
    }
    const conv = roomConversation(room);
    conv.topic = str(message.topic);
    conv.users = names(message.users);
    // "op" or "admin": this room's moderation controls are shown (the server checks).
    conv.role = ROLES.has(message.role) ? message.role : null;
    if (Number.isInteger(message.clients_count)) conv.count = message.clients_count;
    const first = !chat.joined;
    if (chat.switchTo === conv.key) showConversation(conv);
    renderRooms();
    if (current === conv) showRoomState();
    if (first) {
      chat.joined = true; // before enterOthers: its joins go on this socket
      enterOthers(chat.entering.slice(1));
    }
    chat.joined = true;
    chat.everJoined = true;
    chat.attempt = 0;
    chat.nameConflicts = 0;
    chat.nameTyped = false;
    chat.name = str(message.user) || chat.name;
    // A new one with every welcome; none in the first: nothing to resume (one more
    // room's welcome without a token leaves the seat's as it was).
    if (first || "resume" in message) saveResume(str(message.resume));
    // Every welcome of a logged-in connection names its account; a guest's none.
    if (first || "account" in message) setAccount(str(message.account) || null);
    if (chat.credentials && chat.account) {
      chat.credentials = null; // logged in: the password is forgotten
      ui.password.value = "";
      ui.invite.value = "";
      delete ui.join.dataset.invite;
      closeName();
    }
    if (Number.isInteger(message.max_text) && message.max_text > 0) {
      chat.maxText = message.max_text;
    }
    saveName(chat.name);
    showMe();
    setState("online", "online");
  }

  // The header's name: the account's, marked, when logged in.
  function showMe() {
    ui.me.textContent = chat.name;
    ui.me.classList.toggle("account", Boolean(chat.account));
    if (chat.account) ui.me.dataset.account = chat.account;
    else delete ui.me.dataset.account;
    ui.me.title = chat.account
      ? `Logged in as ${chat.account}; click to log out`
      : `You are ${chat.name}; click to change your name or log in`;
    ui.me.hidden = !chat.name;
  }

  function setAccount(account) {
    chat.account = account;
    showMe();
  }

  // The token message after a login or registration: kept for the next one.
  function onToken(message) {
    const token = str(message.token);
    if (token && chat.account) saveAccountToken(token);
  }

  // Logged out (our logout's answer, or a token refused): the tokens go, and the
  // guest form asks who to be next (on the same connection).
  function loggedOut(text) {
    saveAccountToken("");
    saveResume("");
    chat.account = null;
    chat.credentials = null;
    chat.sentToken = false;
    chat.joined = false;
    chat.rooms = [];
    chat.name = null;
    try {
      localStorage.removeItem(NAME_KEY);
    } catch {
      // storage disabled
    }
    showMe();
    showRoomState();
    updateComposer();
    askName(text, "guest");
  }

  function onUsers(message) {
    if (!chat.joined) chat.attempt = 0; // the server is there; a name is not chosen yet
    const conv = conversations.get(roomKey(roomOf(message)));
    if (!conv) return; // the members of a room we are not in: nothing shows them
    conv.users = names(message.users);
    if (Number.isInteger(message.clients_count)) conv.count = message.clients_count;
    if (conv === current) showRoomState();
  }

  function onRooms(message) {
    const rooms = Array.isArray(message.rooms) ? message.rooms.slice(0, 1000) : [];
    const options = rooms
      .filter((entry) => entry && isRoom(entry.room))
      .map((entry) => {
        const option = el("option");
        option.value = entry.room;
        const users = Number.isInteger(entry.users) ? ` · ${entry.users}` : "";
        option.label = `${entry.room}${users}${entry.topic ? ` · ${str(entry.topic)}` : ""}`;
        return option;
      });
    ui.roomOptions.replaceChildren(...options);
  }

  function onDirect(message) {
    const from = str(message.from);
    const to = str(message.to);
    if (!from || !to) return;
    const mine = chat.name && fold(from) === fold(chat.name);
    const conv = directConversation(mine ? to : from);
    conv.active = ++clock;
    const item = bubble(from, message, mine, false);
    append(item, { force: mine, counts: true }, conv);
  }

  function onChat(message) {
    const id = Number.isInteger(message.id) ? message.id : null;
    const history = message.history === true;
    const room = roomOf(message);
    if (!inRooms(room)) return; // a room we are not in: nowhere to show it
    const conv = roomConversation(room);
    const key = JSON.stringify([room, message.user, message.text, message.timestamp]);
    if (id !== null) {
      // Replayed after a reconnect (or a resync) and already on screen.
      const last = chat.lastIds.get(conv.key);
      if (history && last !== undefined && id <= last) return;
      sawId(room, id);
      if (chat.unconfirmed.delete(key)) return; // on screen already, without its id
    } else {
      if (chat.unconfirmed.has(key)) return; // replayed again, still without an id
      chat.unconfirmed.add(key);
      if (chat.unconfirmed.size > 1024) {
        chat.unconfirmed.delete(chat.unconfirmed.values().next().value);
      }
    }
    const user = str(message.user);
    const mine = chat.name && fold(user) === fold(chat.name) && !history;
    append(bubble(user, message, mine, history), { force: mine, counts: !history }, conv);
  }

  function bubble(user, message, mine, history) {
    const item = el("li", "msg");
    if (history) item.classList.add("history");
    if (mine) item.classList.add("mine");
    const meta = el("div", "meta");
    const who = el("span", "who", user);
    who.title = user;
    who.style.setProperty("--hue", String(hue(user)));
    meta.append(who, timeOf(message.timestamp));
    const text = el("div", "text");
    text.append(linkify(str(message.text)));
    item.append(meta, text);
    return item;
  }

  function onSystem(message) {
    if (message.room !== undefined && !isRoom(message.room)) return; // shown nowhere
    if (message.event === "logout") {
      append(el("li", "notice", str(message.text)), {});
      loggedOut("You logged out. Join as a guest, or log in again.");
      return;
    }
    if (message.event === "shutdown" || message.event === "insecure") {
      append(el("li", "notice", str(message.text)), {});
      return;
    }
    const room = roomOf(message);
    if (!inRooms(room)) return;
    const conv = roomConversation(room);
    const item = el("li", "notice", str(message.text));
    if (message.history === true) item.classList.add("history");
    item.append(timeOf(message.timestamp));
    append(item, {}, conv);
    const name = str(message.name);
    if (message.event === "join") addUser(conv, name);
    else if (message.event === "leave") removeUser(conv, name);
    else if (message.event === "kick" || message.event === "ban") removeUser(conv, name);
    else if (message.event === "rename") {
      removeUser(conv, str(message.old));
      addUser(conv, name);
    } else if (message.event === "topic") conv.topic = str(message.topic);
    else if ((message.event === "op" || message.event === "deop") && chat.name &&
             fold(name) === fold(chat.name) && conv.role !== "admin") {
      conv.role = message.event === "op" ? "op" : null; // an admin stays one
    }
    if (Number.isInteger(message.clients_count)) conv.count = message.clients_count;
    const out = message.event === "leave" || message.event === "kick" || message.event === "ban";
    if (out && chat.name && fold(name) === fold(chat.name)) {
      parted(conv); // our own leave (or kick): we are no longer in this room
      return;
    }
    if (conv === current) showRoomState();
  }

  function onError(message) {
    const code = str(message.code);
    const text = str(message.text) || code || "error";
    if (code === "login_failed" && chat.sentToken && !chat.credentials) {
      // The kept token is refused (expired, logged out elsewhere): it goes, and the
      // guest form asks.
      loggedOut("Your login has expired: log in again, or join as a guest.");
      return;
    }
    if (code === "name_registered" && !chat.joined && !chat.credentials && !chat.sentToken &&
        loadAccountToken()) {
      // Our seat was not held any more (its resume failed): log in with the token.
      saveResume("");
      startJoin();
      return;
    }
    if (!chat.joined && chat.sentToken && ACCOUNT_ERRORS.has(code)) {
      // The kept token cannot log in now (too many attempts, TLS required): the
      // dialog says why; joining as a guest from it drops the token.
      askName(text, "login");
      return;
    }
    const refused = ACCOUNT_ERRORS.has(code) || code === "name_taken" || code === "name_invalid";
    if (refused && (chat.credentials || code === "name_registered")) {
      const mode = chat.credentials ? chat.credentials.type : "guest";
      chat.credentials = null;
      if (code === "invite_invalid") ui.join.dataset.invite = "";
      askName(text, mode, code === "name_registered" && mode !== "login");
      return;
    }
    if (!chat.joined && (code === "name_taken" || code === "name_invalid")) {
      chat.nameConflicts += 1;
      // A reconnect or a reload can meet our own old session, not yet gone on the
      // server: with a remembered name, retry a few times before asking.
      if (!chat.nameTyped && code === "name_taken" && chat.nameConflicts <= NAME_RETRIES) {
        disconnect();
        scheduleReconnect("name in use");
        return;
      }
      // Still connected: the next name goes on this socket.
      askName(text);
      return;
    }
    if (code === "room_invalid" || code === "too_many_rooms" || code === "not_in_room") {
      chat.switchTo = null;
      ui.roomError.textContent = text;
    }
    append(el("li", "notice error", text), {});
  }

  // ------------------------------------------------------------ the message list

  function atBottom() {
    const box = ui.messages;
    return box.scrollHeight - box.scrollTop - box.clientHeight <= NEAR_BOTTOM_PX;
  }

  function toBottom() {
    ui.messages.scrollTop = ui.messages.scrollHeight;
    view.stuck = true;
    setUnseen(0);
  }

  function setUnseen(count) {
    view.unseen = count;
    ui.jump.hidden = count === 0;
    ui.jump.textContent = `↓ ${count} new message${count === 1 ? "" : "s"}`;
  }

  // counts: a chat message the reader has not seen yet ("N new messages");
  // force: follow it even when scrolled up (your own message).
  // conv: the conversation it belongs to (the current one by default); in another
  // one it waits there, and a chat counts as unread.
  function append(item, { force = false, counts = false }, conv = current) {
    conv.items.push(item);
    if (conv.items.length > MAX_SHOWN) conv.items.splice(0, conv.items.length - MAX_SHOWN);
    if (conv !== current) {
      if (counts) {
        conv.unread += 1;
        renderRooms();
      }
      return;
    }
    const box = ui.messages;
    box.append(item);
    while (box.childElementCount > MAX_SHOWN) box.firstElementChild.remove();
    if (view.stuck || force) toBottom();
    else if (counts) setUnseen(view.unseen + 1);
  }

  // ------------------------------------------------------------ conversations

  function conversation(key, fields) {
    let conv = conversations.get(key);
    if (!conv) {
      conv = { key, room: null, peer: null, items: [], unread: 0, topic: "", users: [],
        count: null, active: 0, ...fields };
      conversations.set(key, conv);
      trimDirect();
    }
    return conv;
  }

  const roomConversation = (room) => conversation(roomKey(room), { room, name: room });
  const directConversation = (peer) =>
    conversation(`@${fold(peer)}`, { peer, name: `@${peer}` });

  // At most MAX_DIRECT direct conversations: the idlest one (never the shown one) goes.
  function trimDirect() {
    const direct = [...conversations.values()].filter((c) => c.peer !== null && c !== current);
    if (direct.length <= MAX_DIRECT) return;
    direct.sort((a, b) => a.active - b.active);
    for (const conv of direct.slice(0, direct.length - MAX_DIRECT)) conversations.delete(conv.key);
  }

  // hash: the URL's fragment follows (not when the page opens without one).
  function showConversation(conv, hash = true) {
    if (!conv) return;
    current = conv;
    conv.unread = 0;
    ui.messages.replaceChildren(...conv.items);
    setUnseen(0);
    toBottom();
    if (conv.room && hash) {
      chat.switchTo = null;
      const fragment = `#${conv.room.slice(1)}`;
      if (location.hash !== fragment) history.replaceState(null, "", fragment);
    }
    showRoomState();
    renderRooms();
    updateComposer();
  }

  // A room asked for (the room form, a link's fragment, /join): shown now if we are
  // in it, else joined (created if new) and shown once its welcome comes.
  function openRoom(room) {
    const key = roomKey(room);
    ui.roomError.textContent = "";
    if (inRooms(room) || (!chat.joined && current && current.key === key)) {
      showConversation(roomConversation(room));
      return;
    }
    if (!chat.joined) {
      // Not joined yet: it is entered (first) with the join.
      if (!chat.wanted.some((mine) => roomKey(mine) === key)) chat.wanted.push(room);
      showConversation(roomConversation(room));
      return;
    }
    if (chat.rooms.length >= MAX_ROOMS) {
      ui.roomError.textContent = `You are in ${MAX_ROOMS} rooms: leave one first.`;
      return;
    }
    chat.switchTo = key;
    send({ type: "join", room });
  }

  // Our own leave notice: the room's conversation goes; another one shows.
  function parted(conv) {
    chat.rooms = chat.rooms.filter((room) => roomKey(room) !== conv.key);
    chat.wanted = chat.wanted.filter((room) => roomKey(room) !== conv.key);
    chat.lastIds.delete(conv.key);
    saveRooms();
    closeConversation(conv);
  }

  function closeConversation(conv) {
    conversations.delete(conv.key);
    if (current === conv) {
      const next = [...conversations.values()].find((c) => c.room) ||
        [...conversations.values()][0] || roomConversation(LOBBY);
      showConversation(next);
    } else {
      renderRooms();
    }
  }

  function showRoomState() {
    const conv = current;
    ui.roomTitle.textContent = conv.name;
    ui.roomTitle.title = conv.name;
    ui.topic.textContent = conv.peer ? "direct messages (not stored)" : conv.topic;
    ui.topic.title = conv.peer ? "" : conv.topic || "Type /topic text to set the room's topic";
    // A room we left (the last one, still shown) offers to join it again.
    const out = conv.room && chat.joined && !inRooms(conv.room);
    ui.part.textContent = conv.peer ? "Close" : out ? "Join" : "Leave";
    ui.part.title = conv.peer ? `Close the conversation with ${conv.peer}`
      : `${out ? "Join" : "Leave"} ${conv.name}`;
    if (conv.room) {
      chat.users = conv.users;
      renderUsers();
      setCount(conv.count);
    }
  }

  function renderRooms() {
    let unread = 0;
    const items = [...conversations.values()].map((conv) => {
      const item = el("li", conv === current ? "current" : "");
      item.dataset.key = conv.key;
      item.tabIndex = 0;
      const name = el("span", "name", conv.name);
      name.title = conv.name;
      item.append(name);
      if (conv.unread) {
        unread += conv.unread;
        item.classList.add("unread");
        item.append(el("span", "badge", conv.unread));
      }
      return item;
    });
    ui.roomList.replaceChildren(...items);
    ui.unreadAll.hidden = unread === 0;
    ui.unreadAll.textContent = String(unread);
  }

  function names(list) {
    return Array.isArray(list)
      ? list.filter((name) => typeof name === "string").slice(0, MAX_USERS)
      : [];
  }

  // The reader's scrolling decides whether the list follows new messages; a resize
  // (a rotation, a phone keyboard, a window) does not. A resize moves the list too
  // (the browser's scroll anchoring, text rewrapping), and its scroll event comes
  // before the resize observer's turn: a scroll while the box's size differs from the
  // one the observer last saw is the resize's, and the observer decides after it.
  const seen = { width: -1, height: -1 };
  ui.messages.addEventListener(
    "scroll",
    () => {
      const box = ui.messages;
      if (box.clientWidth !== seen.width || box.clientHeight !== seen.height) return;
      view.stuck = atBottom();
      if (view.stuck && view.unseen) setUnseen(0);
    },
    { passive: true },
  );
  new ResizeObserver(() => {
    seen.width = ui.messages.clientWidth;
    seen.height = ui.messages.clientHeight;
    if (view.stuck) toBottom();
  }).observe(ui.messages);
  ui.jump.addEventListener("click", () => {
    toBottom();
    ui.text.focus();
  });

  // ------------------------------------------------------------ header and users

  function setCount(count) {
    if (Number.isInteger(count) && count >= 0) {
      ui.count.textContent = String(count);
      ui.online.hidden = false;
    }
  }

  function addUser(conv, name) {
    if (!name || conv.users.length >= MAX_USERS) return;
    if (conv.users.some((u) => fold(u) === fold(name))) return;
    conv.users.push(name);
  }

  function removeUser(conv, name) {
    conv.users = conv.users.filter((u) => fold(u) !== fold(name));
  }

  function renderUsers() {
    const moderating = current && current.room && current.role ? current : null;
    const items = [...chat.users]
      .sort((a, b) => a.localeCompare(b))
      .map((name) => {
        const me = chat.joined && fold(name) === fold(chat.name);
        const item = el("li", me ? "me" : "");
        const shown = el("span", "name", name);
        shown.title = me ? name : `Message ${name}`;
        item.append(shown);
        if (!me) {
          // A click (or Enter) opens a direct conversation with them.
          item.dataset.user = name;
          item.tabIndex = 0;
          if (moderating) item.append(modMenu(name));
        }
        return item;
      });
    ui.userList.replaceChildren(...items);
  }

  // An op's or admin's menu on a user of the room shown: the server decides (a
  // refusal comes back as an error), so this only saves typing /kick and the rest.
  function modMenu(name) {
    const menu = el("details", "mod");
    const summary = el("summary", "", "⋯");
    summary.title = `Moderate ${name}`;
    summary.setAttribute("aria-label", `Moderate ${name}`);
    menu.append(summary);
    const actions = el("div", "mod-actions");
    const reason = el("input", "mod-reason");
    reason.placeholder = "reason (optional)";
    reason.maxLength = 256;
    reason.setAttribute("aria-label", `Why (kick, mute, ban ${name})`);
    actions.append(reason);
    for (const [act, label] of MOD_ACTIONS) {
      const button = el("button", "", label);
      button.type = "button";
      button.dataset.act = act;
      button.dataset.target = name;
      actions.append(button);
    }
    menu.append(actions);
    return menu;
  }

  function moderate(act, name, reason) {
    if (!current || !current.room) return;
    const message = { type: act, room: current.room, user: name };
    if ((act === "kick" || act === "ban" || act === "mute") && reason.trim()) {
      message.reason = reason.trim().slice(0, 256);
    }
    if (act === "mute") message.duration = 600;
    send(message);
  }

  function drawerOpen() {
    return document.body.classList.contains("show-users");
  }

  function setDrawer(open) {
    document.body.classList.toggle("show-users", open);
    ui.online.setAttribute("aria-expanded", String(open));
  }

  // ------------------------------------------------------------ the name dialog

  // The dialog: a guest's name, or a log in / registration (mode: "guest", "login" or
  // "register"); logged in, the account and Log out. offerLogin: the name is
  // registered, so a button offers to log in to it.
  function askName(error, mode, offerLogin = false) {
    const renaming = chat.joined;
    if (!renaming) {
      chat.nameOk = false;
      send({ type: "who" }); // show who is there while the name is chosen
    }
    const typed = ui.join.open ? ui.name.value : "";
    ui.name.value = typed || chat.name || loadName() || "";
    ui.joinError.textContent = error || "";
    ui.joinCancel.hidden = !renaming;
    ui.offerLogin.hidden = !offerLogin;
    const was = ui.join.dataset.mode === "account" ? "guest" : ui.join.dataset.mode;
    setMode(chat.account ? "account" : mode || was || "guest");
    if (!ui.join.open) ui.join.showModal();
    if (chat.account) ui.logout.focus();
    else if (ui.join.dataset.mode !== "guest" && ui.name.value) ui.password.focus();
    else {
      ui.name.focus();
      ui.name.select();
    }
  }

  function setMode(mode) {
    const account = mode === "account";
    ui.join.dataset.mode = mode || "guest";
    for (const button of ui.modes.querySelectorAll("button")) {
      button.setAttribute("aria-pressed", String(button.dataset.mode === mode));
    }
    const renaming = chat.joined;
    ui.joinTitle.textContent = account ? "Your account"
      : mode === "login" ? "Log in" : mode === "register" ? "Register"
      : renaming ? "Change name" : "Join the chat";
    ui.joinSubmit.textContent = mode === "login" ? "Log in" : mode === "register" ? "Register"
      : renaming ? "Change" : "Join";
    ui.joinSubmit.disabled = false;
    ui.password.autocomplete = mode === "register" ? "new-password" : "current-password";
    ui.accountInfo.hidden = !account;
    ui.accountInfo.textContent = account ? `Logged in as ${chat.account}.` : "";
    ui.logout.hidden = !account;
    ui.joinCancel.textContent = account ? "Close" : "Cancel";
    if (account) ui.joinCancel.hidden = false;
  }

  ui.modes.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-mode]");
    if (!button) return;
    ui.joinError.textContent = "";
    ui.offerLogin.hidden = true;
    setMode(button.dataset.mode);
    (ui.name.value && button.dataset.mode !== "guest" ? ui.password : ui.name).focus();
  });

  ui.offerLogin.addEventListener("click", () => {
    ui.offerLogin.hidden = true;
    ui.joinError.textContent = "";
    setMode("login");
    ui.password.focus();
  });

  ui.logout.addEventListener("click", () => {
    // The server's answer (a logout notice) brings the guest form; offline, the
    // tokens go now (the server's stay good until they expire).
    if (!send({ type: "logout" })) loggedOut("You logged out.");
  });

  function closeName() {
    if (ui.join.open) ui.join.close();
  }

  // A name is needed before anything else: the dialog comes back if it is closed
  // without one (browsers let Escape close even a dialog whose cancel is refused).
  function nameNeeded() {
    return !chat.joined && !chat.nameOk;
  }

  ui.join.addEventListener("cancel", (event) => {
    if (nameNeeded()) event.preventDefault();
  });
  ui.join.addEventListener("close", () => {
    if (nameNeeded()) askName(ui.joinError.textContent);
    else ui.text.focus();
  });

  ui.joinForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const mode = ui.join.dataset.mode;
    if (mode === "account") return;
    const name = ui.name.value.trim();
    if (!name || length(name) > MAX_NAME) {
      ui.joinError.textContent = `A name is 1 to ${MAX_NAME} characters.`;
      return;
    }
    if (mode === "login" || mode === "register") {
      logIn(mode, name);
      return;
    }
    if (chat.joined) {
      send({ type: "join", user: name }); // a rename; the welcome confirms it
    } else {
      saveAccountToken(""); // a guest by choice: a kept token would log in instead
      chat.name = name;
      chat.nameOk = true;
      chat.nameTyped = true;
      chat.nameConflicts = 0;
      if (chat.ws && chat.ws.readyState === WebSocket.OPEN) startJoin();
      else reconnectNow();
    }
    closeName();
  });

  ui.joinCancel.addEventListener("click", closeName);

  // A login or registration: on this connection (a guest's becomes the account's),
  // or in the next join. The dialog stays, its button off, until the welcome or an
  // error answers.
  function logIn(mode, name) {
    const password = ui.password.value;
    const count = length(password);
    if (count < MIN_PASSWORD || count > MAX_PASSWORD) {
      ui.joinError.textContent = `A password is ${MIN_PASSWORD} to ${MAX_PASSWORD} characters.`;
      ui.password.focus();
      return;
    }
    const credentials = { type: mode, user: name, password };
    const invite = ui.invite.value.trim();
    if (mode === "register" && invite) credentials.invite = invite;
    chat.credentials = credentials;
    ui.joinError.textContent = "";
    ui.offerLogin.hidden = true;
    ui.joinSubmit.disabled = true;
    ui.joinSubmit.textContent = mode === "login" ? "Logging in…" : "Registering…";
    if (chat.joined) {
      if (!send({ ...credentials })) chat.credentials = null;
      return;
    }
    chat.name = name;
    chat.nameOk = true;
    chat.nameTyped = true;
    chat.nameConflicts = 0;
    if (chat.ws && chat.ws.readyState === WebSocket.OPEN) startJoin();
    else reconnectNow();
  }

  // ------------------------------------------------------------ the composer

  // Send is on only when a message can go: joined, not blank, within max_text. The
  // count shows near and over the limit; over it, the text stays in the box.
  function updateComposer() {
    const text = ui.text.value;
    const count = length(text);
    const over = count > chat.maxText;
    ui.send.disabled = !chat.joined || !text.trim() || over;
    ui.limit.hidden = count < chat.maxText * NEAR_LIMIT;
    ui.limit.textContent = `${count.toLocaleString()}/${chat.maxText.toLocaleString()}`;
    ui.limit.classList.toggle("over", over);
    ui.limit.title = over ? `Too long: at most ${chat.maxText.toLocaleString()} characters` : "";
    if (over) ui.text.setAttribute("aria-invalid", "true");
    else ui.text.removeAttribute("aria-invalid");
  }

  // Browsers without CSS field-sizing: the box grows with its text by script (up to
  // its max-height; past it, it scrolls).
  const autoGrow = !CSS.supports("field-sizing", "content");
  function fitText() {
    if (!autoGrow) return;
    ui.text.style.height = "auto";
    ui.text.style.height = `${ui.text.scrollHeight}px`;
  }

  ui.text.addEventListener("input", () => {
    updateComposer();
    fitText();
  });

  ui.text.addEventListener("keydown", (event) => {
    // Enter sends, Shift+Enter is a new line; an IME composing text keeps its Enter.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.composer.requestSubmit();
    }
  });

  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = ui.text.value;
    updateComposer();
    if (ui.send.disabled) return; // offline, blank or too long: the text stays in the box
    if (sendText(text)) {
      ui.text.value = "";
      updateComposer();
      fitText();
    }
    ui.text.focus();
  });

  // What the box sends: a chat to the current room, a direct message in a direct
  // conversation, or a command (/join #room, /part, /topic text, /msg NAME text);
  // "//" starts a message with "/". False when nothing was sent.
  function sendText(text) {
    if (text.startsWith("/") && !text.startsWith("//")) return command(text.trim());
    const body = text.startsWith("//") ? text.slice(1) : text;
    if (current.peer) return send({ type: "msg", to: current.peer, text: body });
    if (!inRooms(current.room)) {
      append(el("li", "notice error", `You are not in ${current.room}: join it again.`), {});
      return false;
    }
    return send(inRoom({ type: "chat", text: body }, current.room));
  }

  function command(line) {
    const space = line.indexOf(" ");
    const verb = (space < 0 ? line : line.slice(0, space)).toLowerCase();
    const arg = space < 0 ? "" : line.slice(space + 1).trim();
    const usage = (text) => {
      append(el("li", "notice error", text), {});
      return false;
    };
    if (verb === "/join") {
      const room = parseRoom(arg);
      if (!room) return usage("Usage: /join #room (# and 1-32 of A-Z a-z 0-9 _ - .)");
      openRoom(room);
      return true;
    }
    if (verb === "/part" || verb === "/leave") {
      const room = arg ? parseRoom(arg) : current.room;
      if (!room) return usage("Usage: /part #room");
      return send({ type: "part", room });
    }
    if (verb === "/topic") {
      if (!current.room) return usage("/topic sets a room's topic: open the room first.");
      return send({ type: "topic", room: current.room, topic: arg });
    }
    if (verb === "/msg") {
      let name = arg;
      let text = "";
      if (arg.startsWith('"')) {
        const end = arg.indexOf('"', 1);
        if (end < 0) return usage('Usage: /msg "Name with spaces" text');
        name = arg.slice(1, end);
        text = arg.slice(end + 1).trim();
      } else if (arg.includes(" ")) {
        name = arg.slice(0, arg.indexOf(" "));
        text = arg.slice(arg.indexOf(" ") + 1).trim();
      }
      if (!name.trim() || length(name) > MAX_NAME) return usage("Usage: /msg NAME text");
      showConversation(directConversation(name.trim()));
      return text ? send({ type: "msg", to: name.trim(), text }) : true;
    }
    return usage(`Unknown command ${verb.slice(0, 32)}: /join, /part, /topic and /msg are.`);
  }

  // ------------------------------------------------------------ rooms and people

  ui.roomList.addEventListener("click", (event) => {
    const item = event.target.closest("li[data-key]");
    if (!item) return;
    showConversation(conversations.get(item.dataset.key));
    setRoomsDrawer(false);
    ui.text.focus();
  });
  ui.roomList.addEventListener("keydown", (event) => {
    if (event.key === "Enter") event.target.closest("li[data-key]")?.click();
  });
  ui.userList.addEventListener("click", (event) => {
    const action = event.target.closest("button[data-act]");
    if (action) {
      const menu = action.closest("details");
      const reason = menu?.querySelector(".mod-reason")?.value ?? "";
      menu?.removeAttribute("open");
      moderate(action.dataset.act, action.dataset.target, reason);
      return;
    }
    if (event.target.closest("details.mod")) return; // opening the menu
    const item = event.target.closest("li[data-user]");
    if (!item) return;
    showConversation(directConversation(item.dataset.user));
    setDrawer(false);
    ui.text.focus();
  });
  ui.userList.addEventListener("keydown", (event) => {
    if (event.target.closest("details.mod")) return; // its own keys (the reason, buttons)
    if (event.key === "Enter") event.target.closest("li[data-user]")?.click();
  });
  ui.roomForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const room = parseRoom(ui.roomName.value);
    if (!room) {
      ui.roomError.textContent = "A room is # and 1-32 of A-Z a-z 0-9 _ - .";
      return;
    }
    ui.roomName.value = "";
    openRoom(room);
    setRoomsDrawer(false);
    ui.text.focus();
  });
  // The list of rooms to pick from is asked for when the box is used.
  ui.roomName.addEventListener("focus", () => {
    if (chat.joined) send({ type: "rooms" });
  });
  ui.part.addEventListener("click", () => {
    if (current.peer) closeConversation(current);
    else if (!inRooms(current.room)) openRoom(current.room);
    else send({ type: "part", room: current.room });
  });

  function roomsDrawerOpen() {
    return document.body.classList.contains("show-rooms");
  }

  function setRoomsDrawer(open) {
    document.body.classList.toggle("show-rooms", open);
    ui.roomsToggle.setAttribute("aria-expanded", String(open));
  }

  ui.roomsToggle.addEventListener("click", () => setRoomsDrawer(!roomsDrawerOpen()));

  // The fragment names a room (/#dev): opening the page there, or changing it, shows it.
  function fragmentRoom() {
    let hash = "";
    try {
      hash = decodeURIComponent(location.hash.slice(1));
    } catch {
      return null;
    }
    return hash ? parseRoom(hash) : null;
  }

  window.addEventListener("hashchange", () => {
    const room = fragmentRoom();
    if (room) openRoom(room);
  });

  // ------------------------------------------------------------ the rest of the page

  ui.me.addEventListener("click", () => askName("", "guest"));
  ui.state.addEventListener("click", reconnectNow);
  ui.online.addEventListener("click", () => {
    setDrawer(!drawerOpen());
    send({ type: "who" });
  });

  document.addEventListener("keydown", (event) => {
    // Escape closes the user drawer (the name dialog closes itself).
    if (event.key === "Escape" && (drawerOpen() || roomsDrawerOpen()) && !ui.join.open) {
      setDrawer(false);
      setRoomsDrawer(false);
      ui.text.focus();
    }
  });

  window.addEventListener("online", reconnectNow);
  setInterval(() => {
    if (chat.joined) send({ type: "ping" });
    else send({ type: "who" }); // not joined yet: keep the count shown true
  }, PING_MS);
  setInterval(() => {
    if (chat.timer !== null) showRetry();
  }, 1000);

  // ------------------------------------------------------------ start

  chat.name = loadName();
  // A kept account token logs in without a name typed.
  chat.nameOk = Boolean(chat.name) || Boolean(loadAccountToken());
  chat.wanted = loadRooms();
  const opened = fragmentRoom();
  if (!chat.wanted.length) chat.wanted.push(LOBBY);
  if (opened && !chat.wanted.some((room) => roomKey(room) === roomKey(opened))) {
    chat.wanted.push(opened);
  }
  showConversation(roomConversation(opened || chat.wanted[0]), Boolean(opened));
  connect();
  if (chat.nameOk) ui.text.focus();
  else askName("");
})();
