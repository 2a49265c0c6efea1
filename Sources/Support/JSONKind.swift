import Foundation

/// The JSON type of a value from `JSONSerialization`, telling integers, other numbers and
/// booleans apart (Foundation bridges all three to NSNumber).
public enum JSONKind: Equatable, Sendable {
    case null, bool, integer(Int), number(Double), string, array, object

    public init(_ value: Any) {
        switch value {
        case is NSNull: self = .null
        case is String: self = .string
        case is [Any]: self = .array
        case is [String: Any]: self = .object
        case let n as NSNumber:
            if String(describing: type(of: n)).contains("Boolean") {
                self = .bool
            } else if let i = value as? Int {
                // Foundation converts only integral values that fit (64, 1e3, 64.0; not 64.5).
                self = .integer(i)
            } else {
                self = .number(n.doubleValue)
            }
        default: self = .null
        }
    }

    /// How the value reads in a message: `64.5`, `"eight"`, `true`, `an array`.
    public var shown: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .integer(let i): "\(i)"
        case .number(let d): "\(d)"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}
