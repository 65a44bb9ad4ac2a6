// Package codectest holds golden MQTT wire vectors, annotated byte by byte,
// for the codec's tests and for engine tests that send them over sockets.
// It is imported only by tests.
package codectest

import "github.com/tinymq/tinymq/codec"

// Vector is one packet on the wire and its decoded form.
type Vector struct {
	Name    string
	Version codec.Version
	Raw     []byte
	Packet  any // *codec.Connect, *codec.Publish, ... ; nil for PINGREQ/PINGRESP
}

func b(s string) []byte { return []byte(s) }

// Vectors are valid packets of every type at the levels that have them.
var Vectors = []Vector{
	{"connect/v311/minimal", codec.V311, []byte{
		0x10, 14, // CONNECT, remaining 14
		0, 4, 'M', 'Q', 'T', 'T', // protocol name
		4,     // level 4
		0x02,  // flags: clean session
		0, 60, // keep-alive 60
		0, 2, 'c', '1', // client id
	}, &codec.Connect{ProtocolName: b("MQTT"), Version: codec.V311, CleanStart: true, KeepAlive: 60, ClientID: b("c1")}},

	{"connect/v311/bridge", codec.V311, []byte{
		0x10, 14, // CONNECT, remaining 14
		0, 4, 'M', 'Q', 'T', 'T', // protocol name
		0x84,  // level 4 with Mosquitto's bridge bit (0x80)
		0x00,  // flags: persistent session
		0, 60, // keep-alive 60
		0, 2, 'b', '1', // client id
	}, &codec.Connect{ProtocolName: b("MQTT"), Version: codec.V311, KeepAlive: 60, ClientID: b("b1"), Bridge: true}},

	{"connect/v31/will-user-pass", codec.V31, []byte{
		0x10, 38,
		0, 6, 'M', 'Q', 'I', 's', 'd', 'p', // protocol name
		3,     // level 3
		0xee,  // flags: user, pass, will retain, will QoS 1, will, clean
		0, 10, // keep-alive
		0, 3, 'd', 'e', 'v', // client id
		0, 5, 'd', '/', 's', 't', 'a', // will topic
		0, 4, 'g', 'o', 'n', 'e', // will payload
		0, 1, 'u', // username
		0, 3, 'p', 'w', 'd', // password
	}, &codec.Connect{ProtocolName: b("MQIsdp"), Version: codec.V31, CleanStart: true, KeepAlive: 10, ClientID: b("dev"),
		WillFlag: true, WillQoS: 1, WillRetain: true, WillTopic: b("d/sta"), WillPayload: b("gone"),
		UsernameFlag: true, Username: b("u"), PasswordFlag: true, Password: b("pwd")}},

	{"connect/v5/props-will-props", codec.V5, []byte{
		0x10, 54,
		0, 4, 'M', 'Q', 'T', 'T',
		5,     // level 5
		0xc6,  // flags: user, pass, will (QoS 0), clean start
		0, 30, // keep-alive
		15,                     // properties length
		0x11, 0, 0, 0x0e, 0x10, // session expiry 3600
		0x21, 0, 20, // receive maximum 20
		0x26, 0, 1, 'k', 0, 1, 'v', // user property k=v
		0, 2, 'i', 'd', // client id
		10,                   // will properties length
		0x03, 0, 2, 't', 'x', // content type "tx"
		0x18, 0, 0, 0, 5, // will delay 5
		0, 1, 'w', // will topic
		0, 2, 'x', 'y', // will payload
		0, 1, 'u', // username
		0, 1, 'p', // password
	}, &codec.Connect{ProtocolName: b("MQTT"), Version: codec.V5, CleanStart: true, KeepAlive: 30,
		Props: codec.Properties{Present: 1<<codec.PropSessionExpiry | 1<<codec.PropReceiveMaximum | 1<<codec.PropUser,
			SessionExpiry: 3600, ReceiveMaximum: 20, User: []codec.UserProperty{{Key: b("k"), Value: b("v")}}},
		ClientID: b("id"), WillFlag: true,
		WillProps: codec.Properties{Present: 1<<codec.PropContentType | 1<<codec.PropWillDelay, ContentType: b("tx"), WillDelay: 5},
		WillTopic: b("w"), WillPayload: b("xy"), UsernameFlag: true, Username: b("u"), PasswordFlag: true, Password: b("p")}},

	{"connack/v311/session-present", codec.V311, []byte{
		0x20, 2, // CONNACK
		0x01, // session present
		0x00, // accepted
	}, &codec.Connack{SessionPresent: true}},

	{"connack/v311/refused-5", codec.V311, []byte{0x20, 2, 0x00, 0x05},
		&codec.Connack{ReturnCode: 5, Reason: 5}},

	{"connack/v5/props", codec.V5, []byte{
		0x20, 14,
		0x00,                      // no session present
		0x00,                      // success
		11,                        // properties length
		0x12, 0, 3, 'a', 'b', 'c', // assigned client id "abc"
		0x22, 0, 8, // topic alias maximum 8
		0x24, 1, // maximum QoS 1
	}, &codec.Connack{Props: codec.Properties{
		Present:          1<<codec.PropAssignedClientID | 1<<codec.PropMaximumQoS | 1<<codec.PropTopicAliasMaximum,
		AssignedClientID: b("abc"), MaximumQoS: 1, TopicAliasMaximum: 8}}},

	{"publish/v311/qos0", codec.V311, []byte{
		0x30, 10, // PUBLISH QoS 0
		0, 3, 'a', '/', 'b', // topic
		'h', 'e', 'l', 'l', 'o', // payload
	}, &codec.Publish{Topic: b("a/b"), Payload: b("hello")}},

	{"publish/v311/qos1-dup-retain", codec.V311, []byte{
		0x3b, 7, // PUBLISH DUP QoS 1 RETAIN
		0, 1, 't', // topic
		0x12, 0x34, // packet id
		'x', 'y', // payload
	}, &codec.Publish{Dup: true, QoS: 1, Retain: true, Topic: b("t"), PacketID: 0x1234, Payload: b("xy")}},

	{"publish/v311/qos2-empty-payload", codec.V311, []byte{
		0x34, 5,
		0, 1, 'q',
		0, 9, // packet id 9
	}, &codec.Publish{QoS: 2, Topic: b("q"), PacketID: 9}},

	{"publish/v5/qos1-props", codec.V5, []byte{
		0x32, 39,
		0, 3, 's', '/', 't', // topic
		0, 1, // packet id 1
		29,      // properties length
		0x01, 1, // payload format: UTF-8
		0x02, 0, 0, 0, 60, // message expiry 60
		0x08, 0, 2, 'r', 't', // response topic
		0x09, 0, 1, 0xff, // correlation data
		0x0b, 7, // subscription id 7
		0x0b, 0x80, 0x01, // subscription id 128
		0x23, 0, 3, // topic alias 3
		0x26, 0, 0, 0, 0, // user property "" = ""
		'o', 'k', // payload
	}, &codec.Publish{QoS: 1, Topic: b("s/t"), PacketID: 1, Payload: b("ok"), Props: codec.Properties{
		Present: 1<<codec.PropPayloadFormat | 1<<codec.PropMessageExpiry | 1<<codec.PropResponseTopic |
			1<<codec.PropCorrelationData | 1<<codec.PropSubscriptionID | 1<<codec.PropTopicAlias | 1<<codec.PropUser,
		PayloadFormat: 1, MessageExpiry: 60, ResponseTopic: b("rt"), CorrelationData: []byte{0xff},
		SubscriptionIDs: []uint32{7, 128}, TopicAlias: 3, User: []codec.UserProperty{{Key: b(""), Value: b("")}}}}},

	{"puback/v311", codec.V311, []byte{0x40, 2, 0, 7}, &codec.Ack{Type: codec.TypePuback, PacketID: 7}},
	{"pubrec/v311", codec.V311, []byte{0x50, 2, 0, 7}, &codec.Ack{Type: codec.TypePubrec, PacketID: 7}},
	{"pubrel/v311", codec.V311, []byte{0x62, 2, 0, 7}, &codec.Ack{Type: codec.TypePubrel, PacketID: 7}},
	{"pubcomp/v311", codec.V311, []byte{0x70, 2, 0, 7}, &codec.Ack{Type: codec.TypePubcomp, PacketID: 7}},
	{"puback/v5/short", codec.V5, []byte{0x40, 2, 0, 8}, &codec.Ack{Type: codec.TypePuback, PacketID: 8}},
	{"pubrec/v5/reason-only", codec.V5, []byte{0x50, 3, 0, 8, 0x10},
		&codec.Ack{Type: codec.TypePubrec, PacketID: 8, Reason: codec.NoMatchingSubscribers}},
	{"pubrec/v5/reason-string", codec.V5, []byte{
		0x50, 9,
		0, 8, // packet id
		0x87,                 // not authorized
		5,                    // properties length
		0x1f, 0, 2, 'n', 'o', // reason string
	}, &codec.Ack{Type: codec.TypePubrec, PacketID: 8, Reason: codec.NotAuthorized,
		Props: codec.Properties{Present: 1 << codec.PropReasonString, ReasonString: b("no")}}},

	{"subscribe/v311/two", codec.V311, []byte{
		0x82, 14, // SUBSCRIBE (flags 0010)
		0, 10, // packet id
		0, 3, 'a', '/', '#', 1, // filter a/# QoS 1
		0, 3, '+', '/', 'b', 2, // filter +/b QoS 2
	}, &codec.Subscribe{PacketID: 10, Subs: []codec.Subscription{{Filter: b("a/#"), QoS: 1}, {Filter: b("+/b"), QoS: 2}}}},

	{"subscribe/v5/options", codec.V5, []byte{
		0x82, 9,
		0, 11, // packet id
		2,        // properties length
		0x0b, 42, // subscription id 42
		0, 1, 'x', // filter
		0x2e, // retain handling 2, RAP, no local, QoS 2
	}, &codec.Subscribe{PacketID: 11, Props: codec.Properties{Present: 1 << codec.PropSubscriptionID, SubscriptionIDs: []uint32{42}},
		Subs: []codec.Subscription{{Filter: b("x"), QoS: 2, NoLocal: true, RetainAsPublished: true, RetainHandling: 2}}}},

	{"suback/v311", codec.V311, []byte{0x90, 5, 0, 10, 0, 1, 0x80},
		&codec.Suback{PacketID: 10, Reasons: []codec.ReasonCode{0, 1, 0x80}}},
	{"suback/v5", codec.V5, []byte{0x90, 5, 0, 11, 0, 2, 0x8f},
		&codec.Suback{PacketID: 11, Reasons: []codec.ReasonCode{2, codec.TopicFilterInvalid}}},

	{"unsubscribe/v311", codec.V311, []byte{
		0xa2, 9,
		0, 12, // packet id
		0, 1, 'a', // filter
		0, 2, 'b', '/', // filter
	}, &codec.Unsubscribe{PacketID: 12, Filters: [][]byte{b("a"), b("b/")}}},
	{"unsubscribe/v5", codec.V5, []byte{0xa2, 6, 0, 13, 0, 0, 1, 'z'},
		&codec.Unsubscribe{PacketID: 13, Filters: [][]byte{b("z")}}},
	{"unsuback/v311", codec.V311, []byte{0xb0, 2, 0, 12}, &codec.Unsuback{PacketID: 12}},
	{"unsuback/v5", codec.V5, []byte{0xb0, 5, 0, 13, 0, 0x00, 0x11},
		&codec.Unsuback{PacketID: 13, Reasons: []codec.ReasonCode{codec.Success, codec.NoSubscriptionExisted}}},

	{"pingreq", codec.V311, []byte{0xc0, 0}, nil},
	{"pingresp", codec.V311, []byte{0xd0, 0}, nil},

	{"disconnect/v311", codec.V311, []byte{0xe0, 0}, &codec.Disconnect{}},
	{"disconnect/v5/will", codec.V5, []byte{
		0xe0, 7,
		0x04,             // disconnect with will
		5,                // properties length
		0x11, 0, 0, 0, 0, // session expiry 0
	}, &codec.Disconnect{Reason: codec.DisconnectWithWill, Props: codec.Properties{Present: 1 << codec.PropSessionExpiry}}},

	{"auth/v5/continue", codec.V5, []byte{
		0xf0, 12,
		0x18,                      // continue authentication
		10,                        // properties length
		0x15, 0, 3, 'S', 'C', 'R', // authentication method "SCR"
		0x16, 0, 1, 0x2a, // authentication data {0x2a}
	}, &codec.Auth{Reason: codec.ContinueAuthentication, Props: codec.Properties{
		Present: 1<<codec.PropAuthMethod | 1<<codec.PropAuthData, AuthMethod: b("SCR"), AuthData: []byte{0x2a}}}},
}

// Bad is a malformed or forbidden packet and the reason code it earns.
type Bad struct {
	Name    string
	Version codec.Version
	Raw     []byte
	Code    codec.ReasonCode
}

// BadVectors break one rule each; the name carries the spec id.
var BadVectors = []Bad{
	{"MQTT-1.5.5-1/five-length-bytes", codec.V311, []byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x7f}, codec.MalformedPacket},
	{"non-minimal-length", codec.V311, []byte{0xc0, 0x80, 0x00}, codec.MalformedPacket},
	{"reserved-type-0", codec.V311, []byte{0x00, 0}, codec.MalformedPacket},
	{"MQTT-3.8.1-1/subscribe-flags", codec.V311, []byte{0x80, 6, 0, 1, 0, 1, 'a', 0}, codec.MalformedPacket},
	{"MQTT-2.2.2-1/pingreq-flags", codec.V311, []byte{0xc1, 0}, codec.MalformedPacket},
	{"MQTT-3.3.1-4/publish-qos3", codec.V311, []byte{0x36, 5, 0, 1, 't', 0, 1}, codec.MalformedPacket},
	{"MQTT-2.3.1-1/publish-id-0", codec.V311, []byte{0x32, 5, 0, 1, 't', 0, 0}, codec.ProtocolError},
	{"MQTT-3.3.2-2/publish-wildcard", codec.V311, []byte{0x30, 3, 0, 1, '#'}, codec.TopicNameInvalid},
	{"MQTT-1.5.3-2/publish-nul", codec.V311, []byte{0x30, 3, 0, 1, 0}, codec.MalformedPacket},
	{"MQTT-1.5.3-1/publish-bad-utf8", codec.V311, []byte{0x30, 4, 0, 2, 0xc3, 0x28}, codec.MalformedPacket},
	{"MQTT-3.8.3-3/subscribe-empty", codec.V311, []byte{0x82, 2, 0, 1}, codec.ProtocolError},
	{"MQTT-3.8.3-4/subscribe-qos3", codec.V311, []byte{0x82, 6, 0, 1, 0, 1, 'a', 3}, codec.MalformedPacket},
	{"MQTT-3.10.3-2/unsubscribe-empty", codec.V311, []byte{0xa2, 2, 0, 1}, codec.ProtocolError},
	{"MQTT-3.1.2-3/connect-reserved-flag", codec.V311, []byte{0x10, 12, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x03, 0, 0, 0, 0}, codec.MalformedPacket},
	{"MQTT-3.1.2-11/will-qos-without-will", codec.V311, []byte{0x10, 12, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x0a, 0, 0, 0, 0}, codec.MalformedPacket},
	{"MQTT-3.1.2-22/password-without-user", codec.V311, []byte{0x10, 15, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x42, 0, 0, 0, 0, 0, 1, 'p'}, codec.MalformedPacket},
	{"MQTT-3.1.2-2/connect-level-6", codec.V311, []byte{0x10, 12, 0, 4, 'M', 'Q', 'T', 'T', 6, 0x02, 0, 0, 0, 0}, codec.UnsupportedProtocolVersion},
	{"MQTT-3.1.2-1/connect-bad-name", codec.V311, []byte{0x10, 12, 0, 4, 'M', 'Q', 'T', 'X', 4, 0x02, 0, 0, 0, 0}, codec.UnsupportedProtocolVersion},
	{"connect-trailing", codec.V311, []byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 0, 0, 0, 9}, codec.MalformedPacket},
	{"disconnect-v311-body", codec.V311, []byte{0xe0, 1, 0}, codec.MalformedPacket},
	{"MQTT-2.2.2-2/v5-duplicate-prop", codec.V5, []byte{0x30, 8, 0, 1, 't', 4, 0x01, 0, 0x01, 1}, codec.ProtocolError},
	{"v5-prop-not-allowed", codec.V5, []byte{0x30, 6, 0, 1, 't', 2, 0x24, 1}, codec.ProtocolError},
	{"v5-unknown-prop", codec.V5, []byte{0x30, 5, 0, 1, 't', 1, 0x7f}, codec.MalformedPacket},
	{"v5-receive-max-0", codec.V5, []byte{0x10, 16, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 0, 3, 0x21, 0, 0, 0, 0}, codec.ProtocolError},
	{"v5-auth-in-v311", codec.V311, []byte{0xf0, 0}, codec.ProtocolError},
	{"MQTT-3.1.2-14/will-qos-3", codec.V311, []byte{0x10, 12, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x1e, 0, 0, 0, 0}, codec.MalformedPacket},
	{"MQTT-3.1.2-13/MQTT-3.1.2-15/will-retain-without-will", codec.V311, []byte{0x10, 12, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x22, 0, 0, 0, 0}, codec.MalformedPacket},
	{"MQTT-3.1.3-4/client-id-bad-utf8", codec.V311, []byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 0, 0, 1, 0xff}, codec.MalformedPacket},
	{"MQTT-3.1.3-10/will-topic-bad-utf8", codec.V311, []byte{0x10, 18, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x06, 0, 0, 0, 1, 'c', 0, 1, 0xff, 0, 0}, codec.MalformedPacket},
	{"MQTT-3.1.3-11/username-bad-utf8", codec.V311, []byte{0x10, 16, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x82, 0, 0, 0, 1, 'c', 0, 1, 0xff}, codec.MalformedPacket},
	{"MQTT-3.3.1-2/dup-on-qos0", codec.V311, []byte{0x38, 3, 0, 1, 't'}, codec.ProtocolError},
	{"MQTT-3.3.2-1/topic-bad-utf8", codec.V311, []byte{0x30, 3, 0, 1, 0xfe}, codec.MalformedPacket},
	{"MQTT-3.6.1-1/pubrel-flags", codec.V311, []byte{0x60, 2, 0, 1}, codec.MalformedPacket},
	{"MQTT-3.6.1-1/pubrel-dup-v311", codec.V311, []byte{0x6a, 2, 0, 1}, codec.MalformedPacket},
	{"MQTT-3.6.1-1/pubrel-dup-v5", codec.V5, []byte{0x6a, 2, 0, 1}, codec.MalformedPacket},
	{"MQTT-1.5.3-2/topic-nul", codec.V311, []byte{0x30, 4, 0, 2, 'a', 0}, codec.MalformedPacket},
	{"topic-control-char", codec.V311, []byte{0x30, 4, 0, 2, 'a', 0x1f}, codec.MalformedPacket},
	{"topic-c1-control-char", codec.V311, []byte{0x30, 5, 0, 3, 'a', 0xc2, 0x85}, codec.MalformedPacket},
	{"topic-non-character", codec.V311, []byte{0x30, 6, 0, 4, 'a', 0xef, 0xbf, 0xbf}, codec.MalformedPacket},
	{"MQTT-1.5.4-1/v5-topic-surrogate", codec.V5, []byte{0x30, 7, 0, 4, 'a', 0xed, 0xa0, 0x80, 0}, codec.MalformedPacket},
	{"client-id-control-char", codec.V311, []byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 0, 0, 1, 0x7f}, codec.MalformedPacket},
	{"filter-control-char", codec.V311, []byte{0x82, 6, 0, 1, 0, 1, 0x01, 0}, codec.MalformedPacket},
	{"MQTT-3.10.1-1/unsubscribe-flags", codec.V311, []byte{0xa0, 5, 0, 1, 0, 1, 'a'}, codec.MalformedPacket},
	{"MQTT-3.8.3-1/filter-bad-utf8", codec.V311, []byte{0x82, 6, 0, 1, 0, 1, 0xff, 0}, codec.MalformedPacket},
	{"MQTT-3.8.3-5/v5-retain-handling-3", codec.V5, []byte{0x82, 7, 0, 1, 0, 0, 1, 'a', 0x30}, codec.ProtocolError},
	{"MQTT-3.3.2-8/v5-topic-alias-0", codec.V5, []byte{0x30, 7, 0, 1, 't', 3, 0x23, 0, 0}, codec.TopicAliasInvalid},
	{"MQTT-3.3.2-14/v5-response-topic-wildcard", codec.V5, []byte{0x30, 8, 0, 1, 't', 4, 0x08, 0, 1, '#'}, codec.ProtocolError},
	{"MQTT-3.15.2-1/v5-auth-bad-reason", codec.V5, []byte{0xf0, 1, 0x80}, codec.ProtocolError},
}
