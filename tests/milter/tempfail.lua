-- The spool cannot be written (protocol.py replaced arniefiles/inbox by a
-- regular file after start-up): end-of-message answers 451 4.3.0, which the
-- MTA turns into a temporary failure, and nothing is queued.
dofile(srcdir .. "/common.lua")

local conn = open_session("192.0.2.15")
local r = send_message(conn, "QIDTF", "<tf@example.com>",
    {"<tf@example.org>"}, {{"Subject", "no disk"}}, {"Keep me.\r\n"})
check(r == SMFIR_REPLYCODE, "eom: reply " .. tostring(r))
check(mt.eom_check(conn, MT_SMTPREPLY, "451", "4.3.0",
    "Arnie: Queue file write error"), "eom: not 451 4.3.0")
mt.disconnect(conn)
