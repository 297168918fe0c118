-- X-Arnie-Expire-After and DEDUP_WINDOW_SECONDS=3600 (set by protocol.py)
-- through the milter: a deadline is queued with the message; a duration
-- that does not parse is refused with 554 and nothing is queued; the same
-- Message-ID from the same sender a second time is taken from the MTA
-- (the end-of-message reply of a committed message) but not queued again.
dofile(srcdir .. "/common.lua")

local conn = open_session("192.0.2.21")
local r = send_message(conn, "QIDEXP", "<exp@example.com>",
    {"<exp@example.org>"},
    {{"Subject", "expires"}, {"X-Arnie-Expire-After", "1h"}},
    {"Gone in an hour.\r\n"})
check(r == committed_reply(), "eom expires: reply " .. tostring(r))

-- Refused where the header section ends (eoh) or at the latest at eom.
mt.macro(conn, SMFIC_MAIL, "i", "QIDBAD")
step(conn, mt.mailfrom(conn, "<bad@example.com>"), SMFIR_CONTINUE, "mailfrom")
step(conn, mt.rcptto(conn, "<bad@example.org>"), SMFIR_CONTINUE, "rcptto")
step(conn, mt.header(conn, "X-Arnie-Expire-After", "soon"), SMFIR_CONTINUE,
    "header")
check(mt.eoh(conn) == nil, "eoh failed")
r = mt.getreply(conn)
if r == SMFIR_CONTINUE then
	step(conn, mt.bodystring(conn, "Never queued.\r\n"), SMFIR_CONTINUE,
	    "body")
	check(mt.eom(conn) == nil, "eom failed")
	r = mt.getreply(conn)
end
check(r == SMFIR_REPLYCODE, "bad duration: reply " .. tostring(r))
check(mt.abort(conn) == nil, "abort failed")

for _, qid in ipairs({"QIDDUP1", "QIDDUP2"}) do
	r = send_message(conn, qid, "<dup@example.com>", {"<dup@example.org>"},
	    {{"Subject", "twice"}, {"Message-ID", "<dup@test.invalid>"}},
	    {"Once only.\r\n"})
	check(r == committed_reply(), "eom " .. qid .. ": reply " ..
	    tostring(r))
end
mt.disconnect(conn)
