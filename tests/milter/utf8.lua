-- SMTPUTF8 cannot be relayed (libesmtp 1.1 cannot send it): a non-ASCII
-- sender or recipient is refused with 553 5.6.7 at MAIL or RCPT; a message
-- whose client declared SMTPUTF8 and whose header holds UTF-8 is refused
-- with 554 5.6.7 at end-of-message.  A declaration with nothing non-ASCII
-- behind it, and 8-bit text in the body, are accepted.
dofile(srcdir .. "/common.lua")

local conn = open_session("192.0.2.21")
check(mt.mailfrom(conn, "<j\xc3\xb6rg@example.com>") == nil, "mailfrom")
check(mt.getreply(conn) == SMFIR_REPLYCODE, "8-bit sender accepted")

mt.macro(conn, SMFIC_MAIL, "i", "QIDUTF")
step(conn, mt.mailfrom(conn, "<utf@example.com>", "SMTPUTF8"),
    SMFIR_CONTINUE, "mailfrom")
check(mt.rcptto(conn, "<m\xc3\xbcller@example.org>") == nil, "rcptto")
check(mt.getreply(conn) == SMFIR_REPLYCODE, "8-bit recipient accepted")
step(conn, mt.rcptto(conn, "<utf@example.org>"), SMFIR_CONTINUE, "rcptto")
step(conn, mt.header(conn, "Subject", "caf\xc3\xa9"), SMFIR_CONTINUE,
    "header")
step(conn, mt.eoh(conn), SMFIR_CONTINUE, "eoh")
step(conn, mt.bodystring(conn, "body\r\n"), SMFIR_CONTINUE, "body")
check(mt.eom(conn) == nil, "eom")
check(mt.getreply(conn) == SMFIR_REPLYCODE, "SMTPUTF8 header accepted")
check(mt.eom_check(conn, MT_SMTPREPLY, "554", "5.6.7",
    "Arnie: SMTPUTF8 is not supported"), "eom: not 554 5.6.7")
check(mt.abort(conn) == nil, "abort")

-- Declared, but all ASCII in the envelope and the header: relayable.
mt.macro(conn, SMFIC_MAIL, "i", "QIDASCII")
step(conn, mt.mailfrom(conn, "<ascii@example.com>", "SMTPUTF8"),
    SMFIR_CONTINUE, "mailfrom")
step(conn, mt.rcptto(conn, "<ascii@example.org>"), SMFIR_CONTINUE, "rcptto")
step(conn, mt.header(conn, "Subject", "plain"), SMFIR_CONTINUE, "header")
step(conn, mt.eoh(conn), SMFIR_CONTINUE, "eoh")
step(conn, mt.bodystring(conn, "caf\xc3\xa9\r\n"), SMFIR_CONTINUE, "body")
check(mt.eom(conn) == nil, "eom")
check(mt.getreply(conn) == committed_reply(), "ASCII message refused")
mt.disconnect(conn)
