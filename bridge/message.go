package bridge

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Message is one MQTT application message as the adapters see it.
//
// Payload is owned by the message: Publish does not keep a reference to the
// caller's slice after it returns, and a Message delivered to a subscriber
// shares its Payload with other subscribers, so it must not be modified.
type Message struct {
	Topic           string
	Payload         []byte
	QoS             byte
	Retain          bool
	ContentType     string            // MQTT 5 content type
	ResponseTopic   string            // MQTT 5 response topic
	CorrelationData []byte            // MQTT 5 correlation data
	UserProperties  map[string]string // MQTT 5 user properties (last value wins for repeated keys)
	Expiry          time.Duration     // MQTT 5 message expiry; zero means none
	Time            time.Time         // when the broker received it (set on delivery)
}

// Sentinel errors of the bridge. Adapters map each to one status per protocol
// (400/4.00 for ErrInvalidTopic, 503/5.03 for ErrClosed and ErrOverloaded).
var (
	// ErrInvalidTopic means a topic or filter breaks the MQTT topic rules.
	ErrInvalidTopic = errors.New("invalid topic")
	// ErrInvalidQoS means a QoS other than 0, 1 or 2.
	ErrInvalidQoS = errors.New("invalid qos")
	// ErrClosed means the broker is not running (not started yet or shut down).
	ErrClosed = errors.New("broker is not running")
	// ErrOverloaded means the broker refused the message for lack of capacity.
	ErrOverloaded = errors.New("broker overloaded")
)

// TopicError says why a topic or filter is invalid. It wraps ErrInvalidTopic.
type TopicError struct {
	Topic  string
	Reason string
}

func (e *TopicError) Error() string { return fmt.Sprintf("%s: %q", e.Reason, e.Topic) }

// Unwrap makes errors.Is(err, ErrInvalidTopic) true.
func (e *TopicError) Unwrap() error { return ErrInvalidTopic }

const maxTopicLen = 65535

// ValidateTopic checks a topic name for publishing: UTF-8, no U+0000,
// 1 to 65535 bytes, no wildcards [MQTT-4.7.3-1] [MQTT-4.7.3-2] [MQTT-3.3.2-2].
// Topics starting with '$' are reserved for the broker and refused.
func ValidateTopic(topic string) error {
	if err := validateCommon(topic, "topic"); err != nil {
		return err
	}
	if strings.ContainsAny(topic, "+#") {
		return &TopicError{topic, "publish topic must not contain wildcards"}
	}
	if topic[0] == '$' {
		return &TopicError{topic, "topics starting with $ are reserved for the broker"}
	}
	return nil
}

// ValidateFilter checks a subscription filter: the topic rules, plus '+' and
// '#' only as whole levels and '#' only last [MQTT-4.7.1-1] [MQTT-4.7.1-2].
// Shared subscriptions ($share/...) are not accepted from adapters.
func ValidateFilter(filter string) error {
	if err := validateCommon(filter, "filter"); err != nil {
		return err
	}
	if strings.HasPrefix(filter, "$share/") {
		return &TopicError{filter, "shared subscriptions are not available here"}
	}
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return &TopicError{filter, "'#' must be the last level of a filter"}
		case l != "#" && l != "+" && strings.ContainsAny(l, "+#"):
			return &TopicError{filter, "wildcards must occupy a whole topic level"}
		}
	}
	return nil
}

func validateCommon(s, what string) error {
	switch {
	case s == "":
		return &TopicError{s, what + " must not be empty"}
	case len(s) > maxTopicLen:
		return &TopicError{s[:32] + "…", what + " is longer than 65535 bytes"}
	case !utf8.ValidString(s):
		return &TopicError{s, what + " is not valid UTF-8"}
	case strings.ContainsRune(s, 0):
		return &TopicError{s, what + " must not contain U+0000"}
	}
	return nil
}
