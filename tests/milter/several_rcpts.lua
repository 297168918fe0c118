-- One message, three recipients (one of them only in the envelope, as a
-- Bcc is): one queued file listing all three, in order.
dofile(srcdir .. "/common.lua")

local conn = open_session("192.0.2.8")
local r = send_message(conn, "QID0002", "<carol@example.com>",
    {"<r1@example.org>", "<r2@example.net>", "<hidden@example.com>"},
    {{"From", "carol@example.com"}, {"To", "r1@example.org"},
     {"Cc", "r2@example.net"}, {"Subject", "three"}},
    {"Three recipients.\r\n"})
check(r == committed_reply(), "eom: reply " .. tostring(r))
mt.disconnect(conn)
