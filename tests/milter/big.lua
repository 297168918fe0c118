-- A 6 MB message in 96 body chunks of 64,000 octets (libmilter takes at
-- most 65,535 a packet), as an MTA passes a big one:
-- queued byte for byte (protocol.py checks the bytes and that the daemon
-- held little of it in memory: it goes to the spool as it arrives), with
-- a Bcc: field that is still left out.  Then a small message on the same
-- connection.
dofile(srcdir .. "/common.lua")

local line = string.rep("b", 62) .. "\r\n"
local chunk = string.rep(line, 1000)
local chunks = {}
for i = 1, 96 do
	chunks[i] = chunk
end
local conn = open_session("192.0.2.30")
local r = send_message(conn, "QIDHUGE", "<huge@example.com>",
    {"<huge@example.org>"},
    {{"Subject", "huge"}, {"Bcc", "hidden@example.org"}}, chunks)
check(r == committed_reply(), "eom huge: reply " .. tostring(r))

r = send_message(conn, "QIDAFTER", "<after@example.com>",
    {"<after@example.org>"}, {{"Subject", "small"}}, {"ok\r\n"})
check(r == committed_reply(), "eom after: reply " .. tostring(r))
mt.disconnect(conn)
