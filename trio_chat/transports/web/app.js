// trio-chat page: plain JavaScript, no build step. Protocol: docs/protocol.md.
// Every piece of text from the network goes into the page with textContent, never as HTML.
"use strict";

(() => {
  const NAME_KEY = "trio-chat.name";
  const MAX_NAME = 32;
  const MAX_SHOWN = 1000; // messages kept on screen; older ones are dropped
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const PING_MS = 25000; // keeps idle proxies from closing the connection
  const NEAR_BOTTOM_PX = 80;
  const NAME_RETRIES = 5; // reconnects that may meet our own stale session's name

  const $ = (id) => document.getElementById(id);
  const ui = {
    state: $("state"),
    online: $("online"),
    count: $("count"),
    me: $("me"),
    messages: $("messages"),
    userList: $("user-list"),
    composer: $("composer"),
    text: $("text"),
    send: $("send"),
    join: $("join"),
    joinForm: $("join-form"),
    name: $("name"),
    joinError: $("join-error"),
    joinCancel: $("join-cancel"),
  };

  const chat = {
    ws: null, // the current WebSocket, or null
    name: null, // the name we join (or joined) with
    joined: false, // welcome received on the current socket
    everJoined: false, // joined at least once since the page loaded
    attempt: 0, // reconnects since the last welcome, for the backoff
    nameTyped: false, // the name was just typed in (not remembered): a clash is news
    nameConflicts: 0,
    timer: null, // pending reconnect
    retryAt: 0, // when it fires (ms since the epoch), for the countdown
    lastId: null, // id of the newest chat message seen, for "since" on reconnect
    // Chats shown without an id (a cluster server cut off from Redis sends those), by
    // user, text and timestamp: their later copy with an id is the same message.
    unconfirmed: new Set(),
    users: [],
  };

  // ------------------------------------------------------------ helpers

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  const str = (value) => (typeof value === "string" ? value : "");
  const fold = (name) => str(name).toLowerCase();

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

  function hue(name) {
    let h = 0;
    for (const ch of fold(name)) h = (h * 31 + ch.codePointAt(0)) % 360;
    return h;
  }

  function timeOf(timestamp) {
    const node = el("time");
    const date = new Date(str(timestamp));
    if (!Number.isNaN(date.getTime())) {
      node.dateTime = date.toISOString();
      node.textContent = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      node.title = date.toLocaleString();
    }
    return node;
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
    ui.send.disabled = kind !== "online";
  }

  function showRetry() {
    const seconds = Math.max(1, Math.ceil((chat.retryAt - Date.now()) / 1000));
    setState("offline", "offline", `retry in ${seconds} s`);
  }

  function send(message) {
    if (!chat.ws || chat.ws.readyState !== WebSocket.OPEN) return false;
    chat.ws.send(JSON.stringify(message));
    return true;
  }

  function connect() {
    clearTimeout(chat.timer);
    chat.timer = null;
    if (!chat.name || chat.ws) return;
    setState("connecting", "connecting…");
    let ws;
    try {
      ws = new WebSocket(wsUrl());
    } catch {
      scheduleReconnect();
      return;
    }
    chat.ws = ws;
    ws.onopen = () => {
      if (chat.ws !== ws) return;
      const join = { type: "join", user: chat.name, batch: true };
      if (chat.everJoined && chat.lastId !== null) join.since = chat.lastId;
      send(join);
    };
    ws.onmessage = (event) => {
      if (chat.ws !== ws || typeof event.data !== "string") return;
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
      }
    };
    ws.onclose = () => {
      if (chat.ws !== ws) return;
      if (chat.joined) append(el("li", "notice", "Connection lost; reconnecting…"), false);
      chat.ws = null;
      chat.joined = false;
      scheduleReconnect();
    };
  }

  function disconnect() {
    const ws = chat.ws;
    chat.ws = null;
    chat.joined = false;
    if (ws) ws.close(1000, "bye");
  }

  function scheduleReconnect() {
    if (chat.timer !== null || !chat.name) return;
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** chat.attempt);
    const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
    chat.attempt += 1;
    chat.retryAt = Date.now() + delay;
    showRetry();
    chat.timer = setTimeout(connect, delay);
  }

  function reconnectNow() {
    if (chat.ws || !chat.name) return;
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
    saveName(chat.name);
    ui.me.textContent = chat.name;
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
    if (chat.name && fold(user) === fold(chat.name) && !history) item.classList.add("mine");
    const meta = el("div", "meta");
    const who = el("span", "who", user);
    who.style.setProperty("--hue", String(hue(user)));
    meta.append(who, timeOf(message.timestamp));
    item.append(meta, el("div", "text", str(message.text)));
    append(item, item.classList.contains("mine"));
  }

  function onSystem(message) {
    const item = el("li", "notice", str(message.text));
    if (message.history === true) item.classList.add("history");
    item.append(timeOf(message.timestamp));
    append(item, false);
    const name = str(message.name);
    if (message.event === "join") addUser(name);
    else if (message.event === "leave") removeUser(name);
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
        scheduleReconnect();
        return;
      }
      disconnect();
      clearTimeout(chat.timer);
      chat.timer = null;
      setState("offline", "choose a name");
      askName(text);
      return;
    }
    append(el("li", "notice error", text), false);
  }

  // ------------------------------------------------------------ screen

  function append(item, force) {
    const box = ui.messages;
    const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < NEAR_BOTTOM_PX;
    box.append(item);
    while (box.childElementCount > MAX_SHOWN) box.firstElementChild.remove();
    if (nearBottom || force) box.scrollTop = box.scrollHeight;
  }

  function setCount(count) {
    if (Number.isInteger(count) && count >= 0) ui.count.textContent = String(count);
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
        const item = el("li", fold(name) === fold(chat.name) ? "me" : "", name);
        return item;
      });
    ui.userList.replaceChildren(...items);
  }

  function askName(error) {
    ui.name.value = chat.name || loadName() || "";
    ui.joinError.textContent = error || "";
    ui.joinCancel.hidden = !chat.joined;
    ui.join.hidden = false;
    ui.name.focus();
    ui.name.select();
  }

  // ------------------------------------------------------------ input

  ui.joinForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const name = ui.name.value.trim();
    if (!name || name.length > MAX_NAME) {
      ui.joinError.textContent = `A name is 1 to ${MAX_NAME} characters.`;
      return;
    }
    ui.join.hidden = true;
    if (chat.joined) {
      send({ type: "join", user: name }); // a rename; the welcome confirms it
    } else {
      chat.name = name;
      chat.nameTyped = true;
      chat.nameConflicts = 0;
      reconnectNow();
    }
    ui.text.focus();
  });

  ui.joinCancel.addEventListener("click", () => {
    ui.join.hidden = true;
    ui.text.focus();
  });

  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = ui.text.value;
    if (!text.trim() || !chat.joined) return; // offline: the text stays in the box
    if (send({ type: "chat", text })) ui.text.value = "";
  });

  ui.me.addEventListener("click", () => askName(""));
  ui.state.addEventListener("click", reconnectNow);
  ui.online.addEventListener("click", () => {
    const open = document.body.classList.toggle("show-users");
    ui.online.setAttribute("aria-expanded", String(open));
    send({ type: "who" });
  });
  window.addEventListener("online", reconnectNow);
  setInterval(() => {
    if (chat.joined) send({ type: "ping" });
  }, PING_MS);
  setInterval(() => {
    if (chat.timer !== null) showRetry();
  }, 1000);

  // ------------------------------------------------------------ start

  chat.name = loadName();
  if (chat.name) connect();
  else askName("");
})();
