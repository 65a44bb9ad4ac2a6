package codec

// Type is an MQTT control packet type, numbered as on the wire (the high
// nibble of the first fixed-header byte).
type Type uint8

// Control packet types [MQTT-2.1.2].
const (
	TypeReserved    Type = 0
	TypeConnect     Type = 1
	TypeConnack     Type = 2
	TypePublish     Type = 3
	TypePuback      Type = 4
	TypePubrec      Type = 5
	TypePubrel      Type = 6
	TypePubcomp     Type = 7
	TypeSubscribe   Type = 8
	TypeSuback      Type = 9
	TypeUnsubscribe Type = 10
	TypeUnsuback    Type = 11
	TypePingreq     Type = 12
	TypePingresp    Type = 13
	TypeDisconnect  Type = 14
	TypeAuth        Type = 15 // MQTT 5.0 only
)

var typeNames = [...]string{
	TypeReserved:    "RESERVED",
	TypeConnect:     "CONNECT",
	TypeConnack:     "CONNACK",
	TypePublish:     "PUBLISH",
	TypePuback:      "PUBACK",
	TypePubrec:      "PUBREC",
	TypePubrel:      "PUBREL",
	TypePubcomp:     "PUBCOMP",
	TypeSubscribe:   "SUBSCRIBE",
	TypeSuback:      "SUBACK",
	TypeUnsubscribe: "UNSUBSCRIBE",
	TypeUnsuback:    "UNSUBACK",
	TypePingreq:     "PINGREQ",
	TypePingresp:    "PINGRESP",
	TypeDisconnect:  "DISCONNECT",
	TypeAuth:        "AUTH",
}

func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return "UNKNOWN"
}

// Version is the protocol level byte of CONNECT.
type Version uint8

// Protocol levels.
const (
	V31  Version = 3 // MQTT 3.1, protocol name "MQIsdp"
	V311 Version = 4 // MQTT 3.1.1, protocol name "MQTT"
	V5   Version = 5 // MQTT 5.0, protocol name "MQTT"
)

func (v Version) String() string {
	switch v {
	case V31:
		return "3.1"
	case V311:
		return "3.1.1"
	case V5:
		return "5.0"
	}
	return "unknown"
}

// MaxRemaining is the largest remaining length a fixed header can carry
// (four 7-bit groups).
const MaxRemaining = 268435455

// FixedHeader is the decoded first part of every packet.
type FixedHeader struct {
	Type      Type
	Flags     uint8 // low nibble of byte 0
	Remaining int   // remaining length: bytes of body after the header
	HeaderLen int   // 2..5: type byte plus 1..4 length bytes
}

// Size is the whole frame: header plus body.
func (h FixedHeader) Size() int { return h.HeaderLen + h.Remaining }

// PUBLISH flag bits in FixedHeader.Flags [MQTT-2.2.2].
const (
	FlagRetain = 0x01
	FlagQoS    = 0x06
	FlagDup    = 0x08
)

// Dup reports the PUBLISH DUP flag.
func (h FixedHeader) Dup() bool { return h.Flags&FlagDup != 0 }

// QoS reports the PUBLISH QoS bits (may be 3 in a malformed packet).
func (h FixedHeader) QoS() uint8 { return (h.Flags & FlagQoS) >> 1 }

// Retain reports the PUBLISH RETAIN flag.
func (h FixedHeader) Retain() bool { return h.Flags&FlagRetain != 0 }

// ReasonCode is an MQTT 5.0 reason code. The engine speaks in reason codes
// for every protocol level and maps them to 3.x CONNACK return codes with
// ConnackReturnCode.
type ReasonCode uint8

// MQTT 5.0 reason codes [MQTT-2.4].
const (
	Success                             ReasonCode = 0x00 // also NormalDisconnection, GrantedQoS0
	GrantedQoS1                         ReasonCode = 0x01
	GrantedQoS2                         ReasonCode = 0x02
	DisconnectWithWill                  ReasonCode = 0x04
	NoMatchingSubscribers               ReasonCode = 0x10
	NoSubscriptionExisted               ReasonCode = 0x11
	ContinueAuthentication              ReasonCode = 0x18
	ReAuthenticate                      ReasonCode = 0x19
	UnspecifiedError                    ReasonCode = 0x80
	MalformedPacket                     ReasonCode = 0x81
	ProtocolError                       ReasonCode = 0x82
	ImplementationSpecificError         ReasonCode = 0x83
	UnsupportedProtocolVersion          ReasonCode = 0x84
	ClientIdentifierNotValid            ReasonCode = 0x85
	BadUserNameOrPassword               ReasonCode = 0x86
	NotAuthorized                       ReasonCode = 0x87
	ServerUnavailable                   ReasonCode = 0x88
	ServerBusy                          ReasonCode = 0x89
	Banned                              ReasonCode = 0x8A
	ServerShuttingDown                  ReasonCode = 0x8B
	BadAuthenticationMethod             ReasonCode = 0x8C
	KeepAliveTimeout                    ReasonCode = 0x8D
	SessionTakenOver                    ReasonCode = 0x8E
	TopicFilterInvalid                  ReasonCode = 0x8F
	TopicNameInvalid                    ReasonCode = 0x90
	PacketIdentifierInUse               ReasonCode = 0x91
	PacketIdentifierNotFound            ReasonCode = 0x92
	ReceiveMaximumExceeded              ReasonCode = 0x93
	TopicAliasInvalid                   ReasonCode = 0x94
	PacketTooLarge                      ReasonCode = 0x95
	MessageRateTooHigh                  ReasonCode = 0x96
	QuotaExceeded                       ReasonCode = 0x97
	AdministrativeAction                ReasonCode = 0x98
	PayloadFormatInvalid                ReasonCode = 0x99
	RetainNotSupported                  ReasonCode = 0x9A
	QoSNotSupported                     ReasonCode = 0x9B
	UseAnotherServer                    ReasonCode = 0x9C
	ServerMoved                         ReasonCode = 0x9D
	SharedSubscriptionsNotSupported     ReasonCode = 0x9E
	ConnectionRateExceeded              ReasonCode = 0x9F
	MaximumConnectTime                  ReasonCode = 0xA0
	SubscriptionIdentifiersNotSupported ReasonCode = 0xA1
	WildcardSubscriptionsNotSupported   ReasonCode = 0xA2
)

// NormalDisconnection and GrantedQoS0 share the value 0x00 with Success.
const (
	NormalDisconnection = Success
	GrantedQoS0         = Success
)

// MQTT 3.1 / 3.1.1 CONNACK return codes [MQTT-3.2.2.3].
const (
	ConnAccepted                     uint8 = 0
	ConnRefusedProtocolVersion       uint8 = 1
	ConnRefusedIdentifierRejected    uint8 = 2
	ConnRefusedServerUnavailable     uint8 = 3
	ConnRefusedBadUsernameOrPassword uint8 = 4
	ConnRefusedNotAuthorized         uint8 = 5
)

// SubackFailure is the 3.1.1 SUBACK return code for a refused filter.
const SubackFailure uint8 = 0x80

// ConnackReturnCode maps a reason code to the nearest 3.x CONNACK return code.
func ConnackReturnCode(rc ReasonCode) uint8 {
	switch rc {
	case Success:
		return ConnAccepted
	case UnsupportedProtocolVersion:
		return ConnRefusedProtocolVersion
	case ClientIdentifierNotValid:
		return ConnRefusedIdentifierRejected
	case BadUserNameOrPassword, BadAuthenticationMethod:
		return ConnRefusedBadUsernameOrPassword
	case NotAuthorized, Banned:
		return ConnRefusedNotAuthorized
	default:
		return ConnRefusedServerUnavailable
	}
}

// Error is a protocol error found in peer input. Code is the reason code the
// engine sends (CONNACK or DISCONNECT in 5.0) before closing the connection;
// 3.x connections map it with ConnackReturnCode or simply close.
type Error struct {
	Code ReasonCode
	Msg  string
}

func (e *Error) Error() string { return "codec: " + e.Msg }

// Framing and common sentinels. Decoders may also return *Error values built
// on the error path with a more precise message; compare with errors.As and
// look at Code, not at identity.
var (
	ErrMalformedLength = &Error{MalformedPacket, "malformed remaining length"}
	ErrPacketTooLarge  = &Error{PacketTooLarge, "packet exceeds maximum size"}
	ErrReservedType    = &Error{MalformedPacket, "reserved packet type"}
	ErrReservedFlags   = &Error{MalformedPacket, "reserved fixed-header flags"}
	ErrShortBuffer     = &Error{MalformedPacket, "packet shorter than its fields"}
	ErrTrailingBytes   = &Error{MalformedPacket, "bytes after the last field"}
	ErrBadUTF8         = &Error{MalformedPacket, "malformed UTF-8 string"}
	ErrNullChar        = &Error{MalformedPacket, "U+0000 in a UTF-8 string"}
	ErrControlChar     = &Error{MalformedPacket, "control character (U+0001..U+001F, U+007F..U+009F) in a UTF-8 string"}
	ErrNonCharacter    = &Error{MalformedPacket, "Unicode non-character in a UTF-8 string"}
	ErrInvalidQoS      = &Error{MalformedPacket, "QoS 3"}
	ErrZeroPacketID    = &Error{ProtocolError, "packet identifier 0"}
	ErrNoTopicFilters  = &Error{ProtocolError, "no topic filters"}
	ErrProtocolName    = &Error{UnsupportedProtocolVersion, "unknown protocol name"}
	ErrProtocolVersion = &Error{UnsupportedProtocolVersion, "unsupported protocol level"}
	ErrConnectFlags    = &Error{MalformedPacket, "invalid connect flags"}
	ErrDuplicateProp   = &Error{ProtocolError, "duplicate property"}
	ErrPropNotAllowed  = &Error{ProtocolError, "property not allowed in this packet"}
	ErrPropValue       = &Error{ProtocolError, "property value out of range"}
	ErrUnknownProp     = &Error{MalformedPacket, "unknown property identifier"}
)

// PropID identifies an MQTT 5.0 property [MQTT-2.2.2.2].
type PropID uint8

// Property identifiers.
const (
	PropPayloadFormat        PropID = 0x01 // byte: PUBLISH, Will
	PropMessageExpiry        PropID = 0x02 // uint32: PUBLISH, Will
	PropContentType          PropID = 0x03 // UTF-8: PUBLISH, Will
	PropResponseTopic        PropID = 0x08 // UTF-8: PUBLISH, Will
	PropCorrelationData      PropID = 0x09 // binary: PUBLISH, Will
	PropSubscriptionID       PropID = 0x0B // varint: PUBLISH (repeatable), SUBSCRIBE
	PropSessionExpiry        PropID = 0x11 // uint32: CONNECT, CONNACK, DISCONNECT
	PropAssignedClientID     PropID = 0x12 // UTF-8: CONNACK
	PropServerKeepAlive      PropID = 0x13 // uint16: CONNACK
	PropAuthMethod           PropID = 0x15 // UTF-8: CONNECT, CONNACK, AUTH
	PropAuthData             PropID = 0x16 // binary: CONNECT, CONNACK, AUTH
	PropRequestProblemInfo   PropID = 0x17 // byte 0/1: CONNECT
	PropWillDelay            PropID = 0x18 // uint32: Will
	PropRequestResponseInfo  PropID = 0x19 // byte 0/1: CONNECT
	PropResponseInfo         PropID = 0x1A // UTF-8: CONNACK
	PropServerReference      PropID = 0x1C // UTF-8: CONNACK, DISCONNECT
	PropReasonString         PropID = 0x1F // UTF-8: acks, SUBACK, UNSUBACK, CONNACK, DISCONNECT, AUTH
	PropReceiveMaximum       PropID = 0x21 // uint16 != 0: CONNECT, CONNACK
	PropTopicAliasMaximum    PropID = 0x22 // uint16: CONNECT, CONNACK
	PropTopicAlias           PropID = 0x23 // uint16 != 0: PUBLISH
	PropMaximumQoS           PropID = 0x24 // byte 0/1: CONNACK
	PropRetainAvailable      PropID = 0x25 // byte 0/1: CONNACK
	PropUser                 PropID = 0x26 // UTF-8 pair, repeatable: every packet with properties
	PropMaximumPacketSize    PropID = 0x27 // uint32 != 0: CONNECT, CONNACK
	PropWildcardSubAvailable PropID = 0x28 // byte 0/1: CONNACK
	PropSubIDAvailable       PropID = 0x29 // byte 0/1: CONNACK
	PropSharedSubAvailable   PropID = 0x2A // byte 0/1: CONNACK
)

// UserProperty is one name/value pair. Both alias the decoded input.
type UserProperty struct {
	Key, Value []byte
}

// Properties holds every MQTT 5.0 property. Present has bit (1<<id) set for
// each property that was decoded or is to be encoded; a zero Properties
// encodes as an empty property list. Byte-slice fields alias the decoded
// input (see the lifetime note on each packet's Decode); SubscriptionIDs and
// User are appended to from their [:0], so a reused Properties decodes
// without allocating once their capacity has grown.
type Properties struct {
	Present uint64

	PayloadFormat        uint8
	MessageExpiry        uint32
	ContentType          []byte
	ResponseTopic        []byte
	CorrelationData      []byte
	SubscriptionIDs      []uint32
	SessionExpiry        uint32
	AssignedClientID     []byte
	ServerKeepAlive      uint16
	AuthMethod           []byte
	AuthData             []byte
	RequestProblemInfo   uint8
	WillDelay            uint32
	RequestResponseInfo  uint8
	ResponseInfo         []byte
	ServerReference      []byte
	ReasonString         []byte
	ReceiveMaximum       uint16
	TopicAliasMaximum    uint16
	TopicAlias           uint16
	MaximumQoS           uint8
	RetainAvailable      uint8
	User                 []UserProperty
	MaximumPacketSize    uint32
	WildcardSubAvailable uint8
	SubIDAvailable       uint8
	SharedSubAvailable   uint8
}

// Has reports whether property id is present.
func (p *Properties) Has(id PropID) bool { return p.Present&(1<<id) != 0 }

// Set marks property id present (the caller sets the field too).
func (p *Properties) Set(id PropID) { p.Present |= 1 << id }

// Connect flag bits [MQTT-3.1.2.3].
const (
	connFlagReserved   = 0x01
	connFlagClean      = 0x02
	connFlagWill       = 0x04
	connFlagWillQoS    = 0x18
	connFlagWillRetain = 0x20
	connFlagPassword   = 0x40
	connFlagUsername   = 0x80
)

// Connect is a CONNECT packet of any protocol level.
type Connect struct {
	ProtocolName []byte  // "MQTT" or "MQIsdp"
	Version      Version // protocol level
	CleanStart   bool    // Clean Session in 3.x
	KeepAlive    uint16  // seconds
	Props        Properties
	ClientID     []byte

	WillFlag    bool
	WillQoS     uint8
	WillRetain  bool
	WillProps   Properties // 5.0 will properties
	WillTopic   []byte
	WillPayload []byte

	UsernameFlag bool
	Username     []byte
	PasswordFlag bool
	Password     []byte

	// Bridge is Mosquitto's bridge flag: bit 0x80 of the protocol level
	// byte (0x83 for 3.1, 0x84 for 3.1.1), sent by a broker bridging into
	// this one so that it is not sent its own messages back. Version holds
	// the level without the bit. 5.0 bridges use No Local instead; 0x85 is
	// refused.
	Bridge bool
}

// BridgeFlag is the bit Mosquitto sets in the CONNECT protocol level of a
// bridge connection.
const BridgeFlag = 0x80

// Connack is a CONNACK. In 3.x, ReturnCode carries the return code and
// Reason is ignored; in 5.0 Reason is used.
type Connack struct {
	SessionPresent bool
	ReturnCode     uint8      // 3.x
	Reason         ReasonCode // 5.0
	Props          Properties
}

// Publish is a PUBLISH.
type Publish struct {
	Dup      bool
	QoS      uint8
	Retain   bool
	Topic    []byte
	PacketID uint16 // only when QoS > 0
	Props    Properties
	Payload  []byte
}

// Ack is PUBACK, PUBREC, PUBREL or PUBCOMP: the four share a layout.
type Ack struct {
	Type     Type // TypePuback, TypePubrec, TypePubrel or TypePubcomp
	PacketID uint16
	Reason   ReasonCode // 5.0; 0 = success
	Props    Properties
}

// Subscribe options bits (5.0; 3.x uses only the QoS bits) [MQTT-3.8.3.1].
const (
	SubOptQoS               = 0x03
	SubOptNoLocal           = 0x04
	SubOptRetainAsPublished = 0x08
	SubOptRetainHandling    = 0x30
)

// Subscription is one topic filter of a SUBSCRIBE.
type Subscription struct {
	Filter            []byte
	QoS               uint8
	NoLocal           bool
	RetainAsPublished bool
	RetainHandling    uint8 // 0, 1 or 2
}

// Subscribe is a SUBSCRIBE. Subs is appended to from Subs[:0] on decode.
type Subscribe struct {
	PacketID uint16
	Props    Properties
	Subs     []Subscription
}

// Suback is a SUBACK. Reasons holds one code per filter: the granted QoS
// (0, 1, 2) or a failure (0x80 in 3.1.1, any 5.0 error code in 5.0).
type Suback struct {
	PacketID uint16
	Props    Properties
	Reasons  []ReasonCode
}

// Unsubscribe is an UNSUBSCRIBE. Filters is appended to from Filters[:0].
type Unsubscribe struct {
	PacketID uint16
	Props    Properties
	Filters  [][]byte
}

// Unsuback is an UNSUBACK. Reasons is 5.0 only (3.x UNSUBACK has no payload).
type Unsuback struct {
	PacketID uint16
	Props    Properties
	Reasons  []ReasonCode
}

// Disconnect is a DISCONNECT (3.x: no fields).
type Disconnect struct {
	Reason ReasonCode
	Props  Properties
}

// Auth is a 5.0 AUTH.
type Auth struct {
	Reason ReasonCode
	Props  Properties
}
