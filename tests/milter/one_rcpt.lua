-- One message, one recipient: committed, then DISCARD (divert) or ACCEPT
-- (copy).  protocol.py checks the queued file byte for byte.
dofile(srcdir .. "/common.lua")

local conn = open_session("192.0.2.7")
check(mt.test_option(conn, SMFIP_HDR_LEADSPC), "SMFIP_HDR_LEADSPC not asked")
local r = send_message(conn, "QID0001", "<alice@example.com>",
    {"<bob@example.org>"},
    {{"From", "Alice <alice@example.com>"}, {"To", "bob@example.org"},
     {"Subject", "one"}},
    {"Hello Bob.\r\n", "Bye.\r\n"})
check(r == committed_reply(), "eom: reply " .. tostring(r))
mt.disconnect(conn)
