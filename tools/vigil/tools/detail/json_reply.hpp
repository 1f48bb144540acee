// A JSON reply mapped onto a Protobuf message without a detour. Protobuf's
// own parser (util::JsonStringToMessage) is the reference: it converts the
// text to the binary form through its type resolver and parses that,
// which costs about 9 µs for a two-field reply here, as much as the rest
// of the `http` tool. For reply types made only of plain fields, and for
// values that protobuf's rules map one way only, the quick path sets the
// fields from the parsed document directly; for anything else it says it
// is not sure, and the caller asks protobuf (also for every error, so that
// errors read as protobuf writes them).
#pragma once

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <nlohmann/json.hpp>

namespace vigil::detail {

/// Whether the quick path can map onto messages of `d`: every field a
/// number, a bool, a string or a message of such a type (no enum, bytes,
/// map, oneof, group or well-known type), singular or repeated.
bool quick_json_type(const google::protobuf::Descriptor* d);

/// Parses `text` as nlohmann::json does (discarded if it is not JSON),
/// and says in `quick` whether the quick path may take the document: not
/// if an object in it names a key twice (the parsed document keeps the
/// last, where protobuf reads both), names an empty key, nests deeper than
/// 64 objects (protobuf counts unknown keys' values too), or the text
/// starts with a byte order mark (nlohmann skips it, protobuf refuses it).
nlohmann::json parse_json(const std::string& text, bool& quick);

/// Maps `doc` onto `out` (empty, of a quick_json_type) as protobuf's
/// JsonStringToMessage with ignore_unknown_fields does, and returns true;
/// or returns false, leaving `out` in any state, where protobuf's rules
/// need more than the quick path knows (null, a number written as text
/// other than plain digits, a fraction for an integer, a field named
/// twice, a value out of range, ...).
bool quick_json_onto(const nlohmann::json& doc,
                     google::protobuf::Message& out);

} // namespace vigil::detail
