-- RFC 5322 2.1.1: a line of 999 octets (CRLF not counted) is refused at
-- end-of-message with 554 5.6.0, whether in the body or in a header field;
-- 998 octets are queued.
dofile(srcdir .. "/common.lua")

local conn = open_session("192.0.2.22")
local r = send_message(conn, "QIDLONG", "<long@example.com>",
    {"<long@example.org>"}, {{"Subject", "long"}},
    {string.rep("x", 500), string.rep("x", 499) .. "\r\nend\r\n"})
check(r == SMFIR_REPLYCODE, "eom long body line: reply " .. tostring(r))
check(mt.eom_check(conn, MT_SMTPREPLY, "554", "5.6.0",
    "Arnie: Message has a line longer than 998 octets; " ..
    "encode it (quoted-printable or base64)"), "eom: not 554 5.6.0")
check(mt.abort(conn) == nil, "abort")

-- "X-Long: " makes 8 octets (the space comes with the value).
r = send_message(conn, "QIDLONGH", "<longh@example.com>",
    {"<longh@example.org>"}, {{"X-Long", string.rep("h", 991)}},
    {"short\r\n"})
check(r == SMFIR_REPLYCODE, "eom long header: reply " .. tostring(r))
check(mt.abort(conn) == nil, "abort")

r = send_message(conn, "QIDFIT998", "<fit998@example.com>",
    {"<fit998@example.org>"}, {{"X-Long", string.rep("h", 990)}},
    {string.rep("x", 998) .. "\r\n"})
check(r == committed_reply(), "eom at 998: reply " .. tostring(r))
mt.disconnect(conn)
