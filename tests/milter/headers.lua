-- Header fields come out byte-exact: folding kept, with LF- or
-- CRLF-separated continuation lines both written as CRLF (Postfix sends
-- LF), raw UTF-8 and encoded words untouched, repeated fields kept in order,
-- trailing blanks kept; body chunks joined as given, even with a CRLF split
-- across two chunks.  A second connection negotiates without
-- SMFIP_HDR_LEADSPC, as an old MTA would: "Name: value".
--
-- Note: once SMFIP_HDR_LEADSPC is negotiated, miltertest itself puts one
-- space before every value passed to mt.header(), so the values below are
-- written without it and a field without a space after the colon cannot be
-- sent from here; postfix_e2e.py covers that case with a real Postfix.
--
-- The Received: field Arnie prepends: the second connection comes from an
-- IPv6 address; a third one is a local submission, a connection without an
-- address as Sendmail presents one (Postfix's port 0 is covered by
-- postfix_e2e.py): no "from" clause.  HELO is sent explicitly: the HELO
-- miltertest would send by itself before MAIL comes after the MAIL macros,
-- and libmilter drops the macros of later stages at HELO (no {i} then).
dofile(srcdir .. "/common.lua")

local conn = open_session("192.0.2.16")
local r = send_message(conn, "QIDH", "<h@example.com>", {"<h@example.org>"},
    {{"Received", "from client.example (client.example [192.0.2.16])\n" ..
      "\tby mx.example (Postfix) with ESMTP id QIDH\n\tfor <h@example.org>"},
     {"X-Folded-CRLF", "one\r\n two\r\n\tthree"},
     {"Subject", "=?UTF-8?B?Wm/DqyDDhnLDuHNrw7hiaW5n?="},
     {"X-Name", "Zo\xC3\xAB \xC3\x86r\xC3\xB8sk\xC3\xB8bing \xE6\x97\xA5\xE6\x9C\xAC"},
     {"X-Empty", ""},
     {"X-Trail", "value  \t"},
     {"Subject", "second subject"}},
    {"line 1\r\n.dot line\r\n\r", "\nlast\r\n"})
check(r == committed_reply(), "eom: reply " .. tostring(r))
mt.disconnect(conn)

local old = connect()
-- Every step the MTA offers by default except the leading space.
check(mt.negotiate(old, nil, 0x000FFFFF, nil) == nil, "negotiate failed")
check(not mt.test_option(old, SMFIP_HDR_LEADSPC), "LEADSPC without offer")
step(old, mt.conninfo(old, "client.example", "2001:db8::17"),
    SMFIR_CONTINUE, "conninfo")
step(old, mt.helo(old, "old.example"), SMFIR_CONTINUE, "helo")
r = send_message(old, "QIDOLD", "<old@example.com>", {"<old@example.org>"},
    {{"Subject", "plain"}, {"X-Empty", ""}}, {"old\r\n"})
check(r == committed_reply(), "eom old: reply " .. tostring(r))
mt.disconnect(old)

local loc = connect()
mt.macro(loc, SMFIC_CONNECT, "{client_addr}", "127.0.0.1")
step(loc, mt.conninfo(loc, "localhost", "unspec"), SMFIR_CONTINUE,
    "conninfo local")
step(loc, mt.helo(loc, "localhost"), SMFIR_CONTINUE, "helo local")
r = send_message(loc, "QIDL", "<local@example.com>", {"<l@example.org>"},
    {{"Subject", "local"}}, {"local\r\n"})
check(r == committed_reply(), "eom local: reply " .. tostring(r))
mt.disconnect(loc)
