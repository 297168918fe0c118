-- A transaction aborted in the middle of the body stores nothing; the next
-- one on the same connection is queued alone and whole.  A connection that
-- goes away mid-message stores nothing either.
dofile(srcdir .. "/common.lua")

local conn = open_session("192.0.2.12")
envelope_and_headers(conn, "QIDX", "<gone@example.com>",
    {"<never@example.org>"}, {{"Subject", "aborted"}})
step(conn, mt.bodystring(conn, "half a message\r\n"), SMFIR_CONTINUE, "body")
check(mt.abort(conn) == nil, "abort failed")

local r = send_message(conn, "QIDY", "<kept@example.com>",
    {"<kept@example.org>"}, {{"Subject", "after abort"}},
    {"Kept.\r\n"})
check(r == committed_reply(), "eom after abort: reply " .. tostring(r))
mt.disconnect(conn)

local lost = open_session("192.0.2.13")
envelope_and_headers(lost, "QIDZ", "<drop@example.com>",
    {"<drop@example.org>"}, {{"Subject", "dropped"}})
step(lost, mt.bodystring(lost, "no end\r\n"), SMFIR_CONTINUE, "body")
mt.disconnect(lost, false)
