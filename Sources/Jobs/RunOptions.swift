import Foundation
import Support

/// The options a job records with its run (`runs.options_json`, a JSON object, keys sorted,
/// numbers as JSON numbers): `computation`, what changes the stored numbers (a run resumes, and
/// shards merge, only when it is `==`), and the rest, kept for provenance. Each job owns one
/// (`DLAOptions`, `PatchOptions`, `EvalOptions`, `TrainOptions`); the CLI fills it, `Report`
/// decodes it. Reading is lenient: a value stored as text by lnlens before schema v3 ("8",
/// "true") reads as the number or boolean; one that cannot be read is unset.
public protocol JobOptions: Codable, Equatable, Sendable {
    associatedtype Computation: Codable, Equatable, Sendable
    associatedtype Record: Codable, Equatable, Sendable
    var computation: Computation { get set }
    /// Provenance: what was run and where it was stored.
    var record: Record { get set }
    init()
}

/// The first option in which two runs' computations differ: its stored key and each side's
/// value as text (nil: unset).
public struct OptionDifference: Equatable, Sendable {
    public var key: String
    public var a: String?
    public var b: String?
    public init(key: String, a: String?, b: String?) { (self.key, self.a, self.b) = (key, a, b) }
}

extension JobOptions {
    /// One JSON object holding both parts' keys.
    public init(from decoder: Decoder) throws {
        self.init()
        (computation, record) = (try Computation(from: decoder), try Record(from: decoder))
    }

    public func encode(to encoder: Encoder) throws {
        try computation.encode(to: encoder)
        try record.encode(to: encoder)
    }

    /// The options stored as `json` (unset where it holds no readable value; all unset when it
    /// is not a JSON object: a damaged or hand-edited row).
    public init(json: String) {
        self = (try? JSONDecoder().decode(Self.self, from: Data(json.utf8))) ?? Self()
    }

    /// As stored in `options_json`.
    public var json: String { RunOptions.encode(self) }

    /// Whether `a` and `b` are the same computation (`==` of `computation`), and when not, the
    /// first option, by key, whose values differ: what resume and merge refuse with.
    public static func sameComputation(_ a: Self, _ b: Self) -> OptionDifference? {
        guard a.computation != b.computation else { return nil }
        let x = RunOptions.values(RunOptions.encode(a.computation)), y = RunOptions.values(RunOptions.encode(b.computation))
        let key = Set(x.keys).union(y.keys).sorted().first { x[$0] != y[$0] } ?? "options"
        return OptionDifference(key: key, a: x[key], b: y[key])
    }

    /// `sameComputation` of two stored `options_json` texts.
    public static func sameComputation(_ a: String, _ b: String) -> OptionDifference? {
        sameComputation(Self(json: a), Self(json: b))
    }
}

/// A stored option: decoded leniently (see `JobOptions`), left out of the JSON when nil.
@propertyWrapper
public struct Stored<Value: StoredValue>: Codable, Equatable, Sendable {
    public var wrappedValue: Value?
    public init(wrappedValue: Value?) { self.wrappedValue = wrappedValue }
    public init(from decoder: Decoder) throws { wrappedValue = try? Value(from: decoder) }
    public func encode(to encoder: Encoder) throws { try wrappedValue.encode(to: encoder) }
}

extension KeyedDecodingContainer {
    public func decode<V>(_: Stored<V>.Type, forKey key: Key) throws -> Stored<V> {
        if let value = try? decodeIfPresent(V.self, forKey: key) { return Stored(wrappedValue: value) }
        let scalar = try? decodeIfPresent(JSONScalar.self, forKey: key)
        return Stored(wrappedValue: scalar.flatMap { V(storedText: $0.text) })
    }
}

extension KeyedEncodingContainer {
    public mutating func encode<V>(_ value: Stored<V>, forKey key: Key) throws {
        try encodeIfPresent(value.wrappedValue, forKey: key)
    }
}

/// A value an option holds, with how it reads when stored as text (`RunOptions.canonical`).
public protocol StoredValue: Codable, Equatable, Sendable {
    init?(storedText: String)
}

extension Int: StoredValue { public init?(storedText: String) { self.init(storedText) } }
extension UInt64: StoredValue { public init?(storedText: String) { self.init(storedText) } }
extension Double: StoredValue {
    /// Finite numbers only: JSON has no others, and NaN would differ from itself.
    public init?(storedText: String) {
        guard let d = Double(storedText), d.isFinite else { return nil }
        self = d
    }
}
extension String: StoredValue { public init?(storedText: String) { self = storedText } }
extension Bool: StoredValue {
    public init?(storedText: String) {
        switch storedText {
        case "true": self = true
        case "false": self = false
        default: return nil
        }
    }
}
extension Dictionary: StoredValue where Key == String, Value == Bool {
    public init?(storedText: String) { nil }
}

/// A JSON boolean, number or string, as `RunOptions.canonical` text.
struct JSONScalar: Decodable {
    let text: String
    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let b = try? c.decode(Bool.self) { text = b ? "true" : "false"; return }
        if let i = try? c.decode(Int.self) { text = String(i); return }
        if let d = try? c.decode(Double.self) { text = RunOptions.canonical(d); return }
        text = RunOptions.canonical(try c.decode(String.self))
    }
}

/// The text form of stored options: encoding, and values as text for messages.
public enum RunOptions {
    /// `value` as `options_json` text: keys sorted, values JSON numbers, booleans, strings or
    /// objects (Foundation's serialisation, as every run stored so far).
    public static func encode<T: Encodable>(_ value: T) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        guard let data = try? encoder.encode(value), let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        else { return "{}" }
        return json(object)
    }

    /// The options object of a run (empty when `json` is not one: a hand-edited or damaged row).
    public static func object(_ json: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any] ?? [:]
    }

    /// The values of `keys` (nil: every key) in an options JSON object, each as `canonical` text.
    public static func values(_ json: String, keys: [String]? = nil) -> [String: String] {
        let object = object(json)
        var out: [String: String] = [:]
        for key in keys ?? Array(object.keys) { if let v = object[key] { out[key] = canonical(v) } }
        return out
    }

    /// An option value as text that does not depend on how it was stored: runs before schema v3
    /// wrote numbers and booleans as strings ("8", "true"), later ones as JSON numbers and
    /// booleans (8, true), and Foundation prints a JSON `true` as "1". Booleans read `true` or
    /// `false`, integral numbers as integers (8.0 and "8" read "8"), other numbers in Swift's
    /// shortest round-trip form ("0.0006" and 6e-4 read "0.0006"), other text as it is.
    static func canonical(_ value: Any) -> String {
        switch JSONKind(value) {
        case .bool: return (value as? Bool) == true ? "true" : "false"
        case .integer(let i): return String(i)
        case .number(let d): return (value as? UInt64).map(String.init) ?? canonical(d)
        case .string: return canonical(value as! String)
        case .null: return "null"
        case .array, .object:
            let data = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys])
            return data.map { String(decoding: $0, as: UTF8.self) } ?? "\(value)"
        }
    }

    static func canonical(_ s: String) -> String {
        if s == "true" || s == "false" { return s }
        if let i = Int(s) { return String(i) }
        if let u = UInt64(s) { return String(u) }
        if s.first.map({ $0.isNumber || $0 == "-" || $0 == "." }) == true, let d = Double(s), d.isFinite { return canonical(d) }
        return s
    }

    static func canonical(_ d: Double) -> String {
        d.isFinite && d == d.rounded() && abs(d) < 9e15 ? String(Int64(d)) : "\(d)"
    }

    /// `options` as the `options_json` text a run stores: keys sorted.
    public static func json(_ options: [String: Any]) -> String {
        guard let data = try? JSONSerialization.data(withJSONObject: options, options: [.sortedKeys]) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }
}
