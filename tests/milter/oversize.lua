-- MAX_MESSAGE_SIZE=2000 (set by protocol.py): a message of exactly 2000
-- octets is queued; one octet more is refused with 552 as soon as it
-- exceeds the limit; the connection then carries on with a small message.
dofile(srcdir .. "/common.lua")

local limit = 2000
-- "Subject: big\r\n" + "\r\n" = 16 octets before the body.  n octets of
-- body in lines of 80 (78 + CRLF), the last one shorter: lines longer than
-- 998 octets would be refused for that reason.
local function body(n)
	local full = math.floor((n - 2) / 80)
	return string.rep(string.rep("x", 78) .. "\r\n", full) ..
	    string.rep("x", n - 2 - full * 80) .. "\r\n"
end

local conn = open_session("192.0.2.14")
local r = send_message(conn, "QIDFIT", "<fit@example.com>",
    {"<fit@example.org>"}, {{"Subject", "big"}}, {body(limit - 16)})
check(r == committed_reply(), "eom at the limit: reply " .. tostring(r))

envelope_and_headers(conn, "QIDBIG", "<big@example.com>",
    {"<big@example.org>"}, {{"Subject", "big"}})
step(conn, mt.bodystring(conn, body(1000)), SMFIR_CONTINUE, "body 1")
check(mt.bodystring(conn, body(limit - 16 - 1000 + 1)) == nil, "body 2")
check(mt.getreply(conn) == SMFIR_REPLYCODE,
    "oversize: reply " .. tostring(mt.getreply(conn)))
check(mt.abort(conn) == nil, "abort failed")

r = send_message(conn, "QIDSMALL", "<small@example.com>",
    {"<small@example.org>"}, {{"Subject", "small"}}, {"ok\r\n"})
check(r == committed_reply(), "eom small: reply " .. tostring(r))
mt.disconnect(conn)
