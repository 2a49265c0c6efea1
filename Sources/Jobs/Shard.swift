import Foundation

/// One of `count` disjoint parts of a job's work (`--shard I/N`): the units whose index ≡ `index`
/// (mod `count`). A unit is a prompt of a prompt set, or a window of a text (all of a window's
/// positions go to one shard, so no window is run twice); the prompt indices a shard stores are
/// the whole run's. Which units a shard takes depends on nothing else (not on threads, batch or
/// chunk sizes), so N shards together cover every unit exactly once.
public struct Shard: Hashable, Sendable, CustomStringConvertible {
    public let index: Int
    public let count: Int

    /// `index` must lie in `0 ..< count`.
    public init(index: Int, count: Int) throws {
        guard count >= 1 else { throw ShardError.invalid(source: "--shard", value: "\(index)/\(count)", reason: "N must be at least 1") }
        guard (0..<count).contains(index) else {
            throw ShardError.invalid(source: "--shard", value: "\(index)/\(count)",
                                     reason: "I must be one of 0 … \(count - 1) (shards are numbered from 0)")
        }
        self.index = index
        self.count = count
    }

    /// Parses `I/N` as typed after `--shard`.
    public init(parsing text: String) throws {
        func refuse(_ reason: String) -> ShardError { .invalid(source: "--shard", value: text, reason: reason) }
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        if parts.count == 2, parts.allSatisfy(Self.allDigits), Self.number(parts[0]) == nil || Self.number(parts[1]) == nil {
            throw refuse("the numbers are out of range (at most \(Self.largest)); give I/N, e.g. --shard 0/4")
        }
        guard parts.count == 2, let i = Self.number(parts[0]), let n = Self.number(parts[1]) else {
            throw refuse("give I/N, shard I of N with 0 ≤ I < N, e.g. --shard 0/4")
        }
        guard n >= 1 else { throw refuse("N must be at least 1") }
        guard i < n else { throw refuse("I must be one of 0 … \(n - 1) (shards are numbered from 0)") }
        try self.init(index: i, count: n)
    }

    /// Whether unit `unit` (0-based) belongs to this shard.
    public func contains(_ unit: Int) -> Bool { unit % count == index }

    /// The elements of `units` this shard takes, in order.
    public func select<T>(_ units: [T]) -> [T] {
        units.enumerated().filter { contains($0.offset) }.map(\.element)
    }

    /// `I/N`.
    public var description: String { "\(index)/\(count)" }

    /// The shard of a Slurm array task, or nil outside one (no `SLURM_ARRAY_TASK_ID`).
    ///
    /// Task ids are mapped to shards in order: with `--array=0-3` task 2 is shard 2/4, with
    /// `--array=1-4` task 3 is shard 2/4 (`SLURM_ARRAY_TASK_MIN`), with `--array=0-6:2` task 4
    /// is shard 2/4 (`SLURM_ARRAY_TASK_STEP`). The count is `SLURM_ARRAY_TASK_COUNT` (else
    /// derived from `SLURM_ARRAY_TASK_MAX`). A task id that does not fall on that grid is an
    /// error naming the variables. Re-submitting only some tasks of an array (`--array=2`) makes
    /// a new, smaller array: pass `--shard I/N` explicitly then.
    public static func slurmArrayTask(environment env: [String: String]) throws -> Shard? {
        guard let idText = env["SLURM_ARRAY_TASK_ID"] else { return nil }
        func value(_ name: String) throws -> Int? {
            guard let text = env[name] else { return nil }
            let trimmed = Substring(text.trimmingCharacters(in: .whitespaces))
            if allDigits(trimmed), number(trimmed) == nil {
                throw ShardError.invalid(source: name, value: text,
                                         reason: "out of range (at most \(largest)); run inside a Slurm array job or pass --shard I/N")
            }
            guard let v = number(trimmed) else {
                throw ShardError.invalid(source: name, value: text,
                                         reason: "not a non-negative integer; run inside a Slurm array job or pass --shard I/N")
            }
            return v
        }
        let id = try value("SLURM_ARRAY_TASK_ID")!
        let min = try value("SLURM_ARRAY_TASK_MIN") ?? 0
        let step = try value("SLURM_ARRAY_TASK_STEP") ?? 1
        if step < 1 {
            throw ShardError.invalid(source: "SLURM_ARRAY_TASK_STEP", value: "\(step)", reason: "must be at least 1; pass --shard I/N")
        }
        let count: Int
        if let n = try value("SLURM_ARRAY_TASK_COUNT") {
            count = n
        } else if let max = try value("SLURM_ARRAY_TASK_MAX"), max >= min {
            count = (max - min) / step + 1
        } else {
            throw ShardError.missing(variable: "SLURM_ARRAY_TASK_COUNT",
                                     reason: "SLURM_ARRAY_TASK_ID=\(id) is set but not the array's size; pass --shard I/N")
        }
        let grid = "SLURM_ARRAY_TASK_MIN=\(min), SLURM_ARRAY_TASK_STEP=\(step), SLURM_ARRAY_TASK_COUNT=\(count)"
        guard count >= 1 else {
            throw ShardError.invalid(source: "SLURM_ARRAY_TASK_COUNT", value: "\(count)", reason: "must be at least 1; pass --shard I/N")
        }
        let offset = id - min
        guard offset >= 0, offset % step == 0, offset / step < count else {
            throw ShardError.invalid(
                source: "SLURM_ARRAY_TASK_ID", value: idText,
                reason: "not one of the array's \(count) tasks (\(grid)); submit one task per shard (e.g. --array=0-\(count - 1)) or pass --shard I/N")
        }
        return try Shard(index: offset / step, count: count)
    }

    /// The largest shard number or task id taken (18 digits: far beyond any array, and sums of
    /// two stay inside Int).
    static let largest = 999_999_999_999_999_999

    /// Digits only (no sign, no spaces), as an Int; nil past `largest`.
    private static func number(_ s: Substring) -> Int? {
        guard allDigits(s), s.count <= 18 else { return nil }
        return Int(s)
    }

    private static func allDigits(_ s: Substring) -> Bool { !s.isEmpty && s.allSatisfy { $0.isASCII && $0.isNumber } }
}

/// A shard that cannot be used: one line naming the option or environment variable.
public enum ShardError: LocalizedError, Equatable, Sendable {
    /// `source` is `--shard` or the environment variable; `value` what it held.
    case invalid(source: String, value: String, reason: String)
    /// An environment variable that is needed is not set.
    case missing(variable: String, reason: String)

    public var errorDescription: String? {
        switch self {
        case let .invalid(source, value, reason):
            source.hasPrefix("-") ? "\(source) \(value): \(reason)" : "\(source)=\(value): \(reason)"
        case let .missing(variable, reason):
            "\(variable) is not set: \(reason)"
        }
    }
}
