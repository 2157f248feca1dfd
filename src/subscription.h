/*-------------------------------------------------------------------------
 * subscription.h
 *		Topic patterns, shared by subscriptions and endpoints (subscription.c).
 *-------------------------------------------------------------------------
 */
#ifndef OUTBOX_SUBSCRIPTION_H
#define OUTBOX_SUBSCRIPTION_H

#include "outbox.h"

/* subscription.c: pull consumers, and the topic patterns they share with endpoints */
extern bool outbox_topic_matches(const char *pattern, const char *topic);

#endif							/* OUTBOX_SUBSCRIPTION_H */
