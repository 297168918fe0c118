-- The spool is on a 1 MB tmpfs (protocol.py mounts it for the daemon
-- only): a 2 MB message cannot be written, and end-of-message answers
-- 452 4.3.1 (insufficient system storage: the MTA keeps the message and
-- tries again later); the space is given back, so a small message on the
-- same connection is queued.
dofile(srcdir .. "/common.lua")

local conn = open_session("192.0.2.19")
local chunks = {}
for i = 1, 34 do
	chunks[i] = string.rep(string.rep("z", 60) .. "\r\n", 1024)
end
local r = send_message(conn, "QIDFULL", "<full@example.com>",
    {"<full@example.org>"}, {{"Subject", "too big for the disk"}}, chunks)
check(r == SMFIR_REPLYCODE, "eom: reply " .. tostring(r))
check(mt.eom_check(conn, MT_SMTPREPLY, "452", "4.3.1",
    "Arnie: Insufficient system storage"), "eom: not 452 4.3.1")
check(mt.abort(conn) == nil, "abort failed")

r = send_message(conn, "QIDFITS", "<fits@example.com>",
    {"<fits@example.org>"}, {{"Subject", "small"}}, {"ok\r\n"})
check(r == committed_reply(), "eom small: reply " .. tostring(r))
mt.disconnect(conn)
