-- The header section is completed at end-of-message (shared/message.h):
-- a message with Date, From and Message-ID is queued unchanged; one with
-- fields libesmtp would not relay (Return-Path, a repeated To,
-- Original-*, Resent-Reply-To) is queued without them; the null sender
-- gets "From: MAILER-DAEMON@ARNIE_HOSTNAME".  protocol.py checks the
-- queued bytes and the "header fixed" log lines.
dofile(srcdir .. "/common.lua")

local conn = open_session("192.0.2.18")
local r = send_message(conn, "QIDFULL", "<full@example.com>",
    {"<full@example.org>"},
    {{"From", "Full <full@example.com>"}, {"To", "full@example.org"},
     {"Date", "Tue, 01 Apr 2025 10:00:00 +0000"},
     {"Message-ID", "<full@example.com>"}, {"Subject", "complete"}},
    {"Nothing to add.\r\n"})
check(r == committed_reply(), "eom full: reply " .. tostring(r))

r = send_message(conn, "QIDTRIM", "<trim@example.com>",
    {"<trim@example.org>"},
    {{"Return-Path", "<bounce@example.com>"},
     {"From", "trim@example.com"}, {"To", "one@example.org"},
     {"To", "two@example.org"}, {"Original-Subject", "old"},
     {"Subject", "trimmed"}, {"Resent-Reply-To", "r@example.com"},
     {"Date", "Tue, 01 Apr 2025 10:00:00 +0000"},
     {"Message-ID", "<trim@example.com>"}},
    {"Four fields fewer.\r\n"})
check(r == committed_reply(), "eom trim: reply " .. tostring(r))

r = send_message(conn, "QIDNULL", "<>", {"<postmaster@example.org>"},
    {{"Subject", "bounce"}}, {"From the null sender.\r\n"})
check(r == committed_reply(), "eom null sender: reply " .. tostring(r))
mt.disconnect(conn)
