-- A message naming blind copies in Bcc: and Resent-Bcc: fields, as an
-- application hands it over: the envelope has every recipient.  With
-- REMOVE_BCC_HEADERS=true (the default) the queued message has no such
-- field; with false it keeps them.  protocol.py checks which.
dofile(srcdir .. "/common.lua")

local conn = open_session("192.0.2.20")
local r = send_message(conn, "QIDBCC", "<bcc@example.com>",
    {"<to@example.org>", "<hidden@example.net>", "<other@example.net>"},
    {{"From", "bcc@example.com"}, {"To", "to@example.org"},
     {"Bcc", "hidden@example.net,\n\tother@example.net"},
     {"Resent-Bcc", "other@example.net"}, {"Subject", "blind"}},
    {"Who else got this?\r\n"})
check(r == committed_reply(), "eom: reply " .. tostring(r))
mt.disconnect(conn)
