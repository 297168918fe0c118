/*
 * alert: see alert.h.
 */
#include "autoconf.h"

#include "alert.h"

#include <stdio.h>
#include <string.h>

static const char *const names[] = {
    "", "paused", "recovered", "queue_age", "queue_age_cleared"};

void
alert_init(struct alert_state *a, long after, long queue_age)
{
	memset(a, 0, sizeof(*a));
	a->after = after;
	a->queue_age = queue_age;
}

const char *
alert_name(enum alert_event ev)
{
	return names[ev];
}

/* Trouble that waiting does not mend. */
static bool
needs_a_human(const char *kind)
{
	return strcmp(kind, "auth") == 0 || strcmp(kind, "tls") == 0;
}

void
alert_pause(
    struct alert_state *a, time_t since, const char *kind, const char *text)
{
	if (!a->paused) {
		a->paused = true;
		a->since = since;
	}
	snprintf(a->kind, sizeof(a->kind), "%s", kind);
	snprintf(a->text, sizeof(a->text), "%s", text);
}

enum alert_event
alert_resume(struct alert_state *a)
{
	bool told = a->pause_told;

	a->paused = a->pause_told = false;
	return told ? ALERT_RECOVERED : ALERT_NONE;
}

time_t
alert_pause_due(const struct alert_state *a)
{
	if (!a->paused || a->pause_told)
		return 0;
	return needs_a_human(a->kind) ? a->since : a->since + a->after;
}

enum alert_event
alert_check(struct alert_state *a, time_t now, time_t oldest)
{
	time_t due = alert_pause_due(a);
	bool old;

	if (due != 0 && now >= due) {
		a->pause_told = true;
		return ALERT_PAUSED;
	}
	if (a->queue_age <= 0 || oldest < 0)
		return ALERT_NONE;
	old = oldest > 0 && now - oldest > a->queue_age;
	if (old && !a->age_told) {
		a->age_told = true;
		return ALERT_QUEUE_AGE;
	}
	if (!old && a->age_told) {
		a->age_told = false;
		return ALERT_QUEUE_AGE_CLEARED;
	}
	return ALERT_NONE;
}
