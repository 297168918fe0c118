-- Copy mode (set by protocol.py, with MAX_MESSAGE_SIZE=4000): what Arnie
-- cannot take is not refused, since the MTA delivers it itself; Arnie
-- answers ACCEPT and keeps no copy (a long line, an oversize message), or
-- leaves out of its copy only the recipient it cannot relay.
dofile(srcdir .. "/common.lua")

local conn = open_session("192.0.2.23")
local r = send_message(conn, "QIDCL1", "<cl1@example.com>",
    {"<cl1@example.org>"}, {{"Subject", "long"}},
    {string.rep("x", 999) .. "\r\n"})
check(r == SMFIR_ACCEPT, "long line: reply " .. tostring(r))

-- A non-ASCII recipient is left out of Arnie's copy; the others are in it.
mt.macro(conn, SMFIC_MAIL, "i", "QIDCL2")
step(conn, mt.mailfrom(conn, "<cl2@example.com>"), SMFIR_CONTINUE,
    "mailfrom")
step(conn, mt.rcptto(conn, "<m\xc3\xbcller@example.org>"), SMFIR_CONTINUE,
    "8-bit recipient")
step(conn, mt.rcptto(conn, "<cl2@example.org>"), SMFIR_CONTINUE, "rcptto")
step(conn, mt.header(conn, "Subject", "partly"), SMFIR_CONTINUE, "header")
step(conn, mt.eoh(conn), SMFIR_CONTINUE, "eoh")
step(conn, mt.bodystring(conn, "ok\r\n"), SMFIR_CONTINUE, "body")
check(mt.eom(conn) == nil, "eom")
check(mt.getreply(conn) == SMFIR_ACCEPT, "eom: not ACCEPT")

-- Over MAX_MESSAGE_SIZE: ACCEPT as soon as the body goes past it.
envelope_and_headers(conn, "QIDCL3", "<cl3@example.com>",
    {"<cl3@example.org>"}, {{"Subject", "big"}})
check(mt.bodystring(conn, string.rep(string.rep("y", 78) .. "\r\n", 60))
    == nil, "body")
check(mt.getreply(conn) == SMFIR_ACCEPT,
    "oversize: reply " .. tostring(mt.getreply(conn)))
mt.disconnect(conn)
