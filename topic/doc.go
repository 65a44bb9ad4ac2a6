// Package topic validates MQTT topic names and filters, matches names
// against subscriptions (Tree), groups shared subscriptions, and indexes
// retained messages (Retained). Standard library only; see docs/topic.md.
package topic
