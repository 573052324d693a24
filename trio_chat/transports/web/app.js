// trio-chat page: plain JavaScript, no build step. Protocol: docs/protocol.md.
// Every piece of text from the network goes into the page with textContent (links are
// built as elements too), never as HTML.
"use strict";

(() => {
  const NAME_KEY = "trio-chat.name";
  // The seat's resume token (welcome.resume), per tab: a reload within the server's
  // grace takes the seat back, with no left/joined notices for the others.
  const RESUME_KEY = "trio-chat.resume";
  const RESUMED_ELSEWHERE = 4009; // close code: another connection took our seat
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
    lastId: null, // id of the newest chat message seen, for "since" on reconnect
    maxText: DEFAULT_MAX_TEXT,
    // Chats shown without an id (a cluster server cut off from Redis sends those), by
    // user, text and timestamp: their later copy with an id is the same message.
    unconfirmed: new Set(),
    users: [],
  };

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

  function loadToken() {
    try {
      return sessionStorage.getItem(RESUME_KEY);
    } catch {
      return null;
    }
  }

  function saveToken(token) {
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
  // carries to resume goes here. The token (kept in this tab across reloads) takes the
  // seat back; "since" asks only for what this page has not shown (after a reload it
  // shows nothing yet: the usual replay).
  function joinMessage() {
    const join = { type: "join", user: chat.name, batch: true };
    const token = loadToken();
    if (token) join.resume = token;
    if (chat.everJoined && chat.lastId !== null) join.since = chat.lastId;
    return join;
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
      send(chat.nameOk ? joinMessage() : { type: "who" });
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
        if (!chat.joined) chat.attempt = 0; // the server is there; a name is not chosen yet
        setUsers(message.users);
        return setCount(message.clients_count);
      case "error":
        return onError(message);
      case "history_end":
        // Everything up to last_id has been seen (or was before our time):
        // resume from there even if the room was quiet.
        if (Number.isInteger(message.last_id) && message.last_id > (chat.lastId ?? -1)) {
          chat.lastId = message.last_id;
        }
        return undefined;
      default:
        // pong and types this page does not know yet
        return undefined;
    }
  }

  function onWelcome(message) {
    chat.joined = true;
    chat.everJoined = true;
    chat.attempt = 0;
    chat.nameConflicts = 0;
    chat.nameTyped = false;
    chat.name = str(message.user) || chat.name;
    saveToken(str(message.resume)); // a new one with every welcome; none: nothing to resume
    if (Number.isInteger(message.max_text) && message.max_text > 0) {
      chat.maxText = message.max_text;
    }
    saveName(chat.name);
    ui.me.textContent = chat.name;
    ui.me.title = `You are ${chat.name}; click to change your name`;
    ui.me.hidden = false;
    setUsers(message.users);
    setCount(message.clients_count);
    setState("online", "online");
  }

  function onChat(message) {
    const id = Number.isInteger(message.id) ? message.id : null;
    const history = message.history === true;
    const key = JSON.stringify([message.user, message.text, message.timestamp]);
    if (id !== null) {
      // Replayed after a reconnect and already on screen.
      if (history && chat.lastId !== null && id <= chat.lastId) return;
      chat.lastId = id;
      if (chat.unconfirmed.delete(key)) return; // on screen already, without its id
    } else {
      if (chat.unconfirmed.has(key)) return; // replayed again, still without an id
      chat.unconfirmed.add(key);
      if (chat.unconfirmed.size > 1024) {
        chat.unconfirmed.delete(chat.unconfirmed.values().next().value);
      }
    }
    const user = str(message.user);
    const item = el("li", "msg");
    if (history) item.classList.add("history");
    const mine = chat.name && fold(user) === fold(chat.name) && !history;
    if (mine) item.classList.add("mine");
    const meta = el("div", "meta");
    const who = el("span", "who", user);
    who.title = user;
    who.style.setProperty("--hue", String(hue(user)));
    meta.append(who, timeOf(message.timestamp));
    const text = el("div", "text");
    text.append(linkify(str(message.text)));
    item.append(meta, text);
    append(item, { force: mine, counts: !history });
  }

  function onSystem(message) {
    const item = el("li", "notice", str(message.text));
    if (message.history === true) item.classList.add("history");
    item.append(timeOf(message.timestamp));
    append(item, {});
    const name = str(message.name);
    if (message.event === "join") addUser(name);
    else if (message.event === "leave") removeUser(name);
    else if (message.event === "kick" || message.event === "ban") removeUser(name);
    else if (message.event === "rename") {
      removeUser(str(message.old));
      addUser(name);
    }
    setCount(message.clients_count);
  }

  function onError(message) {
    const code = str(message.code);
    const text = str(message.text) || code || "error";
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
  function append(item, { force = false, counts = false }) {
    const box = ui.messages;
    box.append(item);
    while (box.childElementCount > MAX_SHOWN) box.firstElementChild.remove();
    if (view.stuck || force) toBottom();
    else if (counts) setUnseen(view.unseen + 1);
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

  function setUsers(names) {
    if (!Array.isArray(names)) return;
    chat.users = names.filter((name) => typeof name === "string");
    renderUsers();
  }

  function addUser(name) {
    if (!name || chat.users.some((u) => fold(u) === fold(name))) return;
    chat.users.push(name);
    renderUsers();
  }

  function removeUser(name) {
    chat.users = chat.users.filter((u) => fold(u) !== fold(name));
    renderUsers();
  }

  function renderUsers() {
    const items = [...chat.users]
      .sort((a, b) => a.localeCompare(b))
      .map((name) => {
        const item = el("li", chat.joined && fold(name) === fold(chat.name) ? "me" : "");
        const shown = el("span", "name", name);
        shown.title = name;
        item.append(shown);
        return item;
      });
    ui.userList.replaceChildren(...items);
  }

  function drawerOpen() {
    return document.body.classList.contains("show-users");
  }

  function setDrawer(open) {
    document.body.classList.toggle("show-users", open);
    ui.online.setAttribute("aria-expanded", String(open));
  }

  // ------------------------------------------------------------ the name dialog

  function askName(error) {
    const renaming = chat.joined;
    if (!renaming) {
      chat.nameOk = false;
      send({ type: "who" }); // show who is there while the name is chosen
    }
    ui.joinTitle.textContent = renaming ? "Change name" : "Join the chat";
    ui.joinSubmit.textContent = renaming ? "Change" : "Join";
    ui.name.value = chat.name || loadName() || "";
    ui.joinError.textContent = error || "";
    ui.joinCancel.hidden = !renaming;
    if (!ui.join.open) ui.join.showModal();
    ui.name.focus();
    ui.name.select();
  }

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
    const name = ui.name.value.trim();
    if (!name || length(name) > MAX_NAME) {
      ui.joinError.textContent = `A name is 1 to ${MAX_NAME} characters.`;
      return;
    }
    if (chat.joined) {
      send({ type: "join", user: name }); // a rename; the welcome confirms it
    } else {
      chat.name = name;
      chat.nameOk = true;
      chat.nameTyped = true;
      chat.nameConflicts = 0;
      if (chat.ws && chat.ws.readyState === WebSocket.OPEN) send(joinMessage());
      else reconnectNow();
    }
    closeName();
  });

  ui.joinCancel.addEventListener("click", closeName);

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
    if (send({ type: "chat", text })) {
      ui.text.value = "";
      updateComposer();
      fitText();
    }
    ui.text.focus();
  });

  // ------------------------------------------------------------ the rest of the page

  ui.me.addEventListener("click", () => askName(""));
  ui.state.addEventListener("click", reconnectNow);
  ui.online.addEventListener("click", () => {
    setDrawer(!drawerOpen());
    send({ type: "who" });
  });

  document.addEventListener("keydown", (event) => {
    // Escape closes the user drawer (the name dialog closes itself).
    if (event.key === "Escape" && drawerOpen() && !ui.join.open) {
      setDrawer(false);
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
  chat.nameOk = Boolean(chat.name);
  connect();
  if (chat.nameOk) ui.text.focus();
  else askName("");
})();
