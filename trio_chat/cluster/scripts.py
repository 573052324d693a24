"""The Lua scripts the cluster runs in Redis: each one is atomic there, which is what
makes ids, name claims and the reaping of a dead server safe with several servers.

Keys are built from a prefix inside the scripts, so this needs one Redis (not a Redis
Cluster). Message ids are Redis's clock in microseconds, bumped past the last id when
two fall in the same microsecond: one increasing sequence for the whole cluster that
also keeps increasing after Redis loses its data (a restart without persistence),
and stays below 2**53, so JavaScript reads it exactly.

A *name key* is the name's skeleton (:func:`trio_chat.protocol.skeleton`): one claim
covers every name that looks like it, on every server.
"""

from __future__ import annotations

from typing import Final

#: Redis's clock in milliseconds, as ``now_ms``.
_NOW_MS = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

#: ``forget(p, node, maxlen)``: drop a server's presence and name claims, and tell the
#: others which members it had (event ``gone``).
_FORGET = """
local function forget(p, node, maxlen)
  redis.call('ZREM', p .. 'nodes', node)
  local users = redis.call('HGETALL', p .. 'users:' .. node)
  local names = {}
  for i = 1, #users, 2 do
    local key = p .. 'name:' .. users[i]
    if redis.call('GET', key) == node then redis.call('DEL', key) end
    names[#names + 1] = users[i + 1]
  end
  redis.call('DEL', p .. 'users:' .. node)
  redis.call('DEL', p .. 'where:' .. node)
  redis.call('XADD', p .. 'events', 'MAXLEN', '~', maxlen, '*',
    'e', 'gone', 'node', node, 'names', cjson.encode(names))
  return #names
end
"""

#: ``claim(p, node, cf, now_ms)``: take the name for this server; false if another
#: live server holds it (a dead server's claim is taken over).
_CLAIM = """
local function claim(p, node, cf, now_ms)
  local key = p .. 'name:' .. cf
  local holder = redis.call('GET', key)
  if holder and holder ~= node then
    local expiry = redis.call('ZSCORE', p .. 'nodes', holder)
    if expiry and tonumber(expiry) > now_ms then return false end
  end
  redis.call('SET', key, node)
  return true
end
"""

#: How long a server's last published sequence number is remembered (ms): publishing
#: a batch again after a lost reply must not add it twice.
PUB_TTL_MS: Final = 24 * 3600 * 1000

#: ARGV: prefix, maxlen, node, expiry ms, then per message: seq, user, text, timestamp,
#: room key ("" for ``#lobby``). Adds the messages this server has not published yet
#: (seq above its ``pub:`` mark) to their room's stream (``history`` for ``#lobby``,
#: ``history:<room key>`` for the others, which expire after ``expiry ms`` without a
#: message: ``--room-expiry``) with the next ids; returns the last id.
PUBLISH: Final = f"""
local p, maxlen, node, expiry = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', p .. 'last-id') or '0')
local done = tonumber(redis.call('GET', p .. 'pub:' .. node) or '0')
for i = 5, #ARGV, 5 do
  local seq = tonumber(ARGV[i])
  if seq > done then
    last = math.max(now, last + 1)
    local room = ARGV[i + 4]
    local key = p .. 'history'
    if room ~= '' then key = key .. ':' .. room end
    redis.call('XADD', key, 'MAXLEN', '~', maxlen, string.format('%.0f-0', last),
      'u', ARGV[i + 1], 'x', ARGV[i + 2], 'ts', ARGV[i + 3], 'node', node, 'seq', ARGV[i])
    if room ~= '' then redis.call('PEXPIRE', key, expiry) end
    done = seq
  end
end
redis.call('SET', p .. 'last-id', string.format('%.0f', last))
redis.call('SET', p .. 'pub:' .. node, string.format('%.0f', done), 'PX', {PUB_TTL_MS})
return string.format('%.0f', last)
"""

#: ARGV: prefix, maxlen, then per message, oldest first: id, user, text, timestamp,
#: node, seq. After Redis lost its data: merges a server's newest messages into the
#: history stream (rewriting it in id order if it must), raises ``last-id`` and each
#: origin's ``pub:`` mark. Returns how many messages it added.
RESTORE: Final = f"""
local p, maxlen = ARGV[1], tonumber(ARGV[2])
local key = p .. 'history'
local have = redis.call('XRANGE', key, '-', '+')
local ours = {{}}
for i = 3, #ARGV, 6 do
  ours[#ours + 1] = {{tonumber(ARGV[i]), {{'u', ARGV[i + 1], 'x', ARGV[i + 2], 'ts', ARGV[i + 3],
    'node', ARGV[i + 4], 'seq', ARGV[i + 5]}}}}
end
local merged, added, a, b = {{}}, 0, 1, 1
while a <= #have or b <= #ours do
  local ha = have[a]
  local hid = ha and tonumber(string.match(ha[1], '^(%d+)'))
  local ob = ours[b]
  if ob == nil or (ha and hid <= ob[1]) then
    if ob and hid == ob[1] then b = b + 1 end
    merged[#merged + 1] = {{hid, ha[2]}}
    a = a + 1
  else
    merged[#merged + 1] = ob
    added = added + 1
    b = b + 1
  end
end
if added == 0 then return 0 end
redis.call('DEL', key)
local last = tonumber(redis.call('GET', p .. 'last-id') or '0')
local marks = {{}}
for i = math.max(1, #merged - maxlen + 1), #merged do
  local m = merged[i]
  redis.call('XADD', key, string.format('%.0f-0', m[1]), unpack(m[2]))
  last = math.max(last, m[1])
  local fields = {{}}
  for j = 1, #m[2], 2 do fields[m[2][j]] = m[2][j + 1] end
  if fields.node and fields.seq then
    local seq = tonumber(fields.seq)
    if seq > (marks[fields.node] or 0) then marks[fields.node] = seq end
  end
end
redis.call('SET', p .. 'last-id', string.format('%.0f', last))
for node, seq in pairs(marks) do
  local mark = tonumber(redis.call('GET', p .. 'pub:' .. node) or '0')
  if seq > mark then
    redis.call('SET', p .. 'pub:' .. node, string.format('%.0f', seq), 'PX', {PUB_TTL_MS})
  end
end
return added
"""

#: ARGV: prefix, node, name key. 1 if the name is now this server's, 0 if a
#: live server holds it (a dead server's claim is taken over).
CLAIM: Final = (
    _NOW_MS
    + _CLAIM
    + """
if claim(ARGV[1], ARGV[2], ARGV[3], now_ms) then return 1 end
return 0
"""
)

#: ARGV: prefix, node, events maxlen, most topics kept, then per change: op, name key,
#: name, old name key, old name, keep (1: a member here holds the name again, so its
#: claim stays), extra (a rename: the rooms the member is in, JSON {room key: name}).
#: Ops: join, leave, rename, release (a claim no join used; no event); enter and part
#: of a room (the "old name key" is the room's key, the "old name" its
#: name); topic (the "old name key" is the room's key, the "old name" its name, "keep"
#: the topic: kept in ``topics`` while fewer than the most are, for servers that start
#: later); hold (a seat held for a resume: the "old name key" is the token's key, the
#: "old name" the grace in ms, "keep" the rooms it is in, as JSON) and unhold (its token
#: spent here). A leave of a name this server no longer has (its seat resumed on
#: another server) announces nothing. ``where:<node>`` keeps, per member, the rooms it is
#: in ({room key: room name}).
PRESENCE: Final = """
local p, node, maxlen, topics = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local users = p .. 'users:' .. node
local where = p .. 'where:' .. node
local function release(cf, keep)
  local key = p .. 'name:' .. cf
  if keep == '0' and redis.call('GET', key) == node then redis.call('DEL', key) end
end
local function rooms_of(cf)
  local json = redis.call('HGET', where, cf)
  if json then return cjson.decode(json) end
  return {}
end
local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end
for i = 5, #ARGV, 7 do
  local op, cf, name, ocf, old, keep, extra = ARGV[i], ARGV[i + 1], ARGV[i + 2],
    ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  if op == 'enter' or op == 'part' then
    if redis.call('HEXISTS', users, cf) == 1 then
      local rooms = rooms_of(cf)
      if op == 'enter' then rooms[ocf] = old else rooms[ocf] = nil end
      if count(rooms) == 0 then redis.call('HDEL', where, cf)
      else redis.call('HSET', where, cf, cjson.encode(rooms)) end
      redis.call('XADD', p .. 'events', 'MAXLEN', '~', maxlen, '*', 'e', op, 'node', node,
        'n', name, 'r', old)
    end
  elseif op == 'topic' then
    if keep == '' then redis.call('HDEL', p .. 'topics', ocf)
    elseif redis.call('HEXISTS', p .. 'topics', ocf) == 1
        or redis.call('HLEN', p .. 'topics') < topics then
      redis.call('HSET', p .. 'topics', ocf, cjson.encode({old, keep}))
    end
    redis.call('XADD', p .. 'events', 'MAXLEN', '~', maxlen, '*', 'e', 'topic', 'node', node,
      'n', name, 'r', old, 't', keep)
  elseif op == 'join' then
    redis.call('HSET', users, cf, name)
    redis.call('XADD', p .. 'events', 'MAXLEN', '~', maxlen, '*', 'e', 'join', 'node', node,
      'n', name)
  elseif op == 'leave' then
    local had = redis.call('HDEL', users, cf)
    redis.call('HDEL', where, cf)
    release(cf, keep)
    if had == 1 then
      redis.call('XADD', p .. 'events', 'MAXLEN', '~', maxlen, '*', 'e', 'leave', 'node', node,
        'n', name)
    end
  elseif op == 'rename' then
    redis.call('HDEL', users, ocf)
    redis.call('HDEL', where, ocf)
    if extra ~= '{}' then redis.call('HSET', where, cf, extra) end
    release(ocf, keep)
    redis.call('HSET', users, cf, name)
    redis.call('XADD', p .. 'events', 'MAXLEN', '~', maxlen, '*', 'e', 'rename', 'node', node,
      'n', name, 'o', old, 'r', extra)
  elseif op == 'release' then
    release(cf, keep)
  elseif op == 'hold' then
    local key = p .. 'resume:' .. ocf
    redis.call('HSET', key, 'node', node, 'cf', cf, 'name', name, 'rooms', keep)
    redis.call('PEXPIRE', key, tonumber(old))
  elseif op == 'unhold' then
    local key = p .. 'resume:' .. ocf
    if redis.call('HGET', key, 'node') == node then redis.call('DEL', key) end
  end
end
return 1
"""

#: ARGV: prefix, node, token key, name key, events maxlen. A join brought back the
#: token of a seat another live server holds (for ``--resume-grace``, under a look-alike
#: of the same name): the seat moves here, its claim and its entry in the member lists
#: with it, and the others are told (event ``move``: no notice). Returns {1, name, its
#: rooms as JSON}, or {0} when there is no such seat (an unknown or expired token,
#: another name, or a server given up).
RESUME: Final = (
    _NOW_MS
    + """
local p, node, hash, cf, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local key = p .. 'resume:' .. hash
local from = redis.call('HGET', key, 'node')
if not from or from == node or redis.call('HGET', key, 'cf') ~= cf then return {0} end
local expiry = redis.call('ZSCORE', p .. 'nodes', from)
if not expiry or tonumber(expiry) <= now_ms then return {0} end
if redis.call('GET', p .. 'name:' .. cf) ~= from then return {0} end
local name = redis.call('HGET', key, 'name')
local rooms = redis.call('HGET', key, 'rooms') or '[]'
redis.call('DEL', key)
redis.call('SET', p .. 'name:' .. cf, node)
redis.call('HDEL', p .. 'users:' .. from, cf)
redis.call('HSET', p .. 'users:' .. node, cf, name)
local was = redis.call('HGET', p .. 'where:' .. from, cf)
redis.call('HDEL', p .. 'where:' .. from, cf)
if was then redis.call('HSET', p .. 'where:' .. node, cf, was) end
redis.call('XADD', p .. 'events', 'MAXLEN', '~', maxlen, '*', 'e', 'move', 'node', node,
  'from', from, 'n', name)
return {1, name, rooms}
"""
)

#: ARGV: prefix, node, ttl ms, events maxlen. Renews this server's presence and reaps
#: the servers whose presence ran out (whichever server runs this first does it,
#: once). Returns {1 if this server had been reaped or never registered, reaped...}.
HEARTBEAT: Final = (
    _NOW_MS
    + _FORGET
    + """
local p, node, maxlen = ARGV[1], ARGV[2], ARGV[4]
local added = redis.call('ZADD', p .. 'nodes', now_ms + tonumber(ARGV[3]), node)
local dead = redis.call('ZRANGEBYSCORE', p .. 'nodes', '-inf', now_ms)
for _, gone in ipairs(dead) do forget(p, gone, maxlen) end
local result = {added}
for _, gone in ipairs(dead) do result[#result + 1] = gone end
return result
"""
)

#: ARGV: prefix, node, ttl ms, then per member: name key, name, its rooms (JSON
#: {room key: room name}). (Re)registers this server and its members in full, after a
#: (re)connection. Returns {1 if this
#: server was not registered, names a live server claimed first...}: those are not
#: registered; this server renames their members (the later claimer gives way).
REGISTER: Final = (
    _NOW_MS
    + _CLAIM
    + """
local p, node = ARGV[1], ARGV[2]
local added = redis.call('ZADD', p .. 'nodes', now_ms + tonumber(ARGV[3]), node)
local users = p .. 'users:' .. node
local where = p .. 'where:' .. node
redis.call('DEL', users)
redis.call('DEL', where)
local result = {added}
for i = 4, #ARGV, 3 do
  local cf, name = ARGV[i], ARGV[i + 1]
  if claim(p, node, cf, now_ms) then
    redis.call('HSET', users, cf, name)
    if ARGV[i + 2] ~= '{}' then redis.call('HSET', where, cf, ARGV[i + 2]) end
  else
    result[#result + 1] = name
  end
end
return result
"""
)

#: ARGV: prefix, node, events maxlen. A clean stop: forget this server at once.
BYE: Final = (
    _FORGET
    + """
local p, node = ARGV[1], ARGV[2]
redis.call('DEL', p .. 'pub:' .. node)
return forget(p, node, ARGV[3])
"""
)

#: ARGV: prefix, node. The other live servers' members: {node, JSON of its
#: [name key, name, ...], JSON of its [name key, rooms JSON, ...], ...}.
VIEW: Final = (
    _NOW_MS
    + """
local p, node = ARGV[1], ARGV[2]
local live = redis.call('ZRANGEBYSCORE', p .. 'nodes', '(' .. now_ms, '+inf')
local result = {}
for _, other in ipairs(live) do
  if other ~= node then
    result[#result + 1] = other
    result[#result + 1] = cjson.encode(redis.call('HGETALL', p .. 'users:' .. other))
    result[#result + 1] = cjson.encode(redis.call('HGETALL', p .. 'where:' .. other))
  end
end
return result
"""
)

#: ARGV: prefix, node, name key. The name held under that key on a live server (a
#: direct message's recipient that this server has not heard of yet): {1, name}; {2}
#: while the name is claimed there and its join not yet registered; {0} if nobody has
#: it.
LOOKUP: Final = (
    _NOW_MS
    + """
local p, cf = ARGV[1], ARGV[3]
local holder = redis.call('GET', p .. 'name:' .. cf)
if not holder then return {0} end
local expiry = redis.call('ZSCORE', p .. 'nodes', holder)
if not expiry or tonumber(expiry) <= now_ms then return {0} end
local name = redis.call('HGET', p .. 'users:' .. holder, cf)
if not name then return {2} end
return {1, name}
"""
)

#: ARGV: prefix, node, name key, from, text, timestamp, inbox maxlen, inbox ttl ms (a
#: server gone for good leaves no inbox behind), name, the sender's account ("" for a
#: guest: the recipient's server keeps a DM between two accounts). A direct message to whoever
#: holds the name, exactly (not a look-alike), on a live server: it gets the next id and goes
#: to that server's inbox stream (``inbox:<node>``, trimmed to about maxlen; read only
#: by that server). Returns {1, id, the recipient's name, its server}; {2} while the
#: name is claimed and its join not yet registered; or {0} when nobody has that name.
DIRECT: Final = (
    _NOW_MS
    + """
local p, node, cf = ARGV[1], ARGV[2], ARGV[3]
local holder = redis.call('GET', p .. 'name:' .. cf)
if not holder then return {0} end
local expiry = redis.call('ZSCORE', p .. 'nodes', holder)
if not expiry or tonumber(expiry) <= now_ms then return {0} end
local name = redis.call('HGET', p .. 'users:' .. holder, cf)
if not name then return {2} end
if name ~= ARGV[9] then return {0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = math.max(now, tonumber(redis.call('GET', p .. 'last-id') or '0') + 1)
redis.call('SET', p .. 'last-id', string.format('%.0f', last))
local id = string.format('%.0f', last)
redis.call('XADD', p .. 'inbox:' .. holder, 'MAXLEN', '~', ARGV[7], id .. '-0',
  'f', ARGV[4], 't', name, 'x', ARGV[5], 'ts', ARGV[6], 'node', node, 'a', ARGV[10])
redis.call('PEXPIRE', p .. 'inbox:' .. holder, tonumber(ARGV[8]))
return {1, id, name, holder}
"""
)

#: ARGV: prefix, node, name key, name, room key, by, reason, inbox maxlen, inbox ttl
#: ms. A kick of the member holding exactly ``name`` on a live server other than this
#: one: an entry (``k`` the room) in that server's inbox, which expels the member with
#: the kick notice. Returns {1, its server}; {0} when nobody (else) has that name.
KICK: Final = (
    _NOW_MS
    + """
local p, node, cf = ARGV[1], ARGV[2], ARGV[3]
local holder = redis.call('GET', p .. 'name:' .. cf)
if not holder or holder == node then return {0} end
local expiry = redis.call('ZSCORE', p .. 'nodes', holder)
if not expiry or tonumber(expiry) <= now_ms then return {0} end
if redis.call('HGET', p .. 'users:' .. holder, cf) ~= ARGV[4] then return {0} end
redis.call('XADD', p .. 'inbox:' .. holder, 'MAXLEN', '~', ARGV[8], '*',
  'k', ARGV[5], 't', ARGV[4], 'by', ARGV[6], 'r', ARGV[7], 'node', node)
redis.call('PEXPIRE', p .. 'inbox:' .. holder, tonumber(ARGV[9]))
return {1, holder}
"""
)
