-- Helpers shared by the arnie-milter miltertest scripts.
--
-- The runner (protocol.py) starts arnie-milter and passes, with -D:
--   sock    the milter's socket: inet:PORT@127.0.0.1 or unix:/path
--   srcdir  tests/milter, to load this file
--   mode    "divert" or "copy": the end-of-message reply expected
-- Each script stops with error() (miltertest then exits non-zero) on the
-- first unexpected reply; the runner checks the spool afterwards.

function check(cond, what)
	if not cond then
		error(what, 2)
	end
end

-- Connect, retrying for up to 10 s while the daemon starts.
function connect()
	local conn = mt.connect(sock, 40, 0.25)
	check(conn ~= nil, "mt.connect failed")
	return conn
end

-- A protocol step that must return nil and leave reply want.
function step(conn, rc, want, what)
	check(rc == nil, what .. " failed: " .. tostring(rc))
	local got = mt.getreply(conn)
	check(got == want, string.format("%s: reply %s, expected %s", what,
	    tostring(got), tostring(want)))
end

-- The reply a committed message gets in the configured mode.
function committed_reply()
	if mode == "copy" then
		return SMFIR_ACCEPT
	end
	return SMFIR_DISCARD
end

-- connect + client address (the {client_addr} macro and the address),
-- host name "client.example", then HELO "helo.example": protocol.py
-- expects these in the Received: field.
function open_session(addr)
	local conn = connect()
	mt.macro(conn, SMFIC_CONNECT, "{client_addr}", addr)
	step(conn, mt.conninfo(conn, "client.example", addr), SMFIR_CONTINUE,
	    "conninfo")
	step(conn, mt.helo(conn, "helo.example"), SMFIR_CONTINUE, "helo")
	return conn
end

-- MAIL, RCPTs, header fields ({name, value} pairs), body chunks; returns
-- after end of headers.  qid is sent as the {i} macro with MAIL.
function envelope_and_headers(conn, qid, from, rcpts, headers)
	mt.macro(conn, SMFIC_MAIL, "i", qid)
	step(conn, mt.mailfrom(conn, from), SMFIR_CONTINUE, "mailfrom")
	for _, r in ipairs(rcpts) do
		step(conn, mt.rcptto(conn, r), SMFIR_CONTINUE, "rcptto " .. r)
	end
	for _, h in ipairs(headers) do
		step(conn, mt.header(conn, h[1], h[2]), SMFIR_CONTINUE,
		    "header " .. h[1])
	end
	step(conn, mt.eoh(conn), SMFIR_CONTINUE, "eoh")
end

-- A whole message; returns the end-of-message reply.
function send_message(conn, qid, from, rcpts, headers, chunks)
	envelope_and_headers(conn, qid, from, rcpts, headers)
	for _, c in ipairs(chunks) do
		step(conn, mt.bodystring(conn, c), SMFIR_CONTINUE, "body")
	end
	check(mt.eom(conn) == nil, "eom failed")
	return mt.getreply(conn)
end
