-- Several transactions on one connection, and two connections whose
-- transactions interleave: each message keeps its own envelope and body.
dofile(srcdir .. "/common.lua")

local a = open_session("192.0.2.9")
for i = 1, 3 do
	local r = send_message(a, "QIDA" .. i, "<a" .. i .. "@example.com>",
	    {"<to" .. i .. "@example.org>"},
	    {{"Subject", "tx " .. i}}, {"Body " .. i .. ".\r\n"})
	check(r == committed_reply(), "eom " .. i .. ": reply " .. tostring(r))
end

-- Interleaved: b starts a message, c sends a whole one, b finishes.
local b = open_session("192.0.2.10")
local c = open_session("192.0.2.11")
envelope_and_headers(b, "QIDB", "<b@example.com>", {"<tob@example.org>"},
    {{"Subject", "from b"}})
step(b, mt.bodystring(b, "B part 1\r\n"), SMFIR_CONTINUE, "body b1")
local r = send_message(c, "QIDC", "<c@example.com>", {"<toc@example.org>"},
    {{"Subject", "from c"}}, {"C body\r\n"})
check(r == committed_reply(), "eom c: reply " .. tostring(r))
step(b, mt.bodystring(b, "B part 2\r\n"), SMFIR_CONTINUE, "body b2")
check(mt.eom(b) == nil, "eom b failed")
check(mt.getreply(b) == committed_reply(), "eom b: reply")
mt.disconnect(a)
mt.disconnect(b)
mt.disconnect(c)
