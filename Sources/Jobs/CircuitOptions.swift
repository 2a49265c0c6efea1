import Foundation
import GPT2
import ResultsStore

/// How `lnlens circuit` picks the circuit of each point (hannamw/EAP-IG's `apply_topn`,
/// `apply_greedy`, `apply_threshold`, always by |score|).
public enum CircuitSelectionKind: String, CaseIterable, Sendable {
    case top, greedy, threshold
}

/// One circuit of a circuit run: which method's mean scores chose it, how, at what size or
/// threshold, and its edges.
public struct CircuitSpec: Sendable {
    public let method: String
    public let selection: CircuitSelectionKind
    /// The size (top, greedy) or |score| threshold asked for.
    public let requested: Double
    public let circuit: Circuit
    /// The method's mean scores (what chose the edges).
    public let scores: EdgeScores

    public init(method: String, selection: CircuitSelectionKind, requested: Double, circuit: Circuit, scores: EdgeScores) {
        (self.method, self.selection, self.requested, self.circuit, self.scores) = (method, selection, requested, circuit, scores)
    }

    /// `results.quantity` of its per-prompt metric: `eap_ig/top/100`.
    public var quantity: String { "\(method)/\(selection.rawValue)/\(CircuitSpec.text(requested))" }

    /// A size as an integer, a threshold as `%g`.
    public static func text(_ x: Double) -> String { x == x.rounded() && abs(x) < 1e15 ? String(Int(x)) : String(format: "%g", x) }
}

/// Bad `lnlens circuit` input, one line naming the option and what to do.
public enum CircuitError: LocalizedError, Equatable, Sendable {
    case badMethods(String)
    case methodNotInRun(method: String, runID: Int64, stored: [String])
    case badSizes(String)
    case sizeOutOfRange(size: Int, edges: Int, model: String)
    case badThresholds(String)
    case thresholdsNeedThresholdSelection
    case thresholdSelectionNeedsThresholds
    case sizesWithThreshold
    case notCompleted(runID: Int64, status: String)
    case noPrompts(runID: Int64)
    case modelChanged(runID: Int64, path: String)
    case promptChanged(runID: Int64, prompt: Int, reason: String)
    case unknownEdge(runID: Int64, edge: String)

    public var errorDescription: String? {
        switch self {
        case .badMethods(let text):
            "--methods \(text): give eap, eap-ig, exact or several comma-separated, e.g. eap,eap-ig"
        case let .methodNotInRun(method, id, stored):
            "--methods: edges run \(id) has no \(method) scores (it has \(stored.joined(separator: ", "))); leave --methods out to use every method it stored"
        case .badSizes(let text):
            "--sizes (--top) \(text): give numbers of edges ≥ 0, comma-separated, e.g. 0,10,100"
        case let .sizeOutOfRange(size, edges, model):
            "--sizes (--top) \(size): \(model) has \(edges) edges; give sizes from 0 to \(edges)"
        case .badThresholds(let text):
            "--thresholds \(text): give |score| thresholds ≥ 0, comma-separated, e.g. 0.1,0.01"
        case .thresholdsNeedThresholdSelection:
            "--thresholds goes with --selection threshold"
        case .thresholdSelectionNeedsThresholds:
            "--selection threshold needs --thresholds, e.g. --thresholds 0.1,0.01,0.001"
        case .sizesWithThreshold:
            "--sizes (--top) goes with --selection top or greedy; --selection threshold takes --thresholds"
        case let .notCompleted(id, status):
            "RUN \(id): the edges run is \(status), not completed; finish it first (lnlens edges … --resume \(id))"
        case .noPrompts(let id):
            "RUN \(id): the edges run holds no prompt pairs (an empty shard?); give a run with prompts"
        case let .modelChanged(id, path):
            "RUN \(id): the weights at \(path) are no longer those the edges run used (model hash differs); restore them or run lnlens edges again"
        case let .promptChanged(id, prompt, reason):
            "RUN \(id): prompt \(prompt) of the edges run no longer tokenizes as stored (\(reason)); run lnlens edges again"
        case let .unknownEdge(id, edge):
            "RUN \(id): edge \(edge) is not an edge of the model's graph; the edges run does not belong to this model"
        }
    }
}

/// The options of a `circuit` run.
public struct CircuitOptions: JobOptions {
    public struct Computation: Codable, Equatable, Sendable {
        /// The `edges` run whose scores and prompts the circuits come from.
        @Stored public var edgesRun: Int?
        /// Stored method names, comma-separated (`eap,eap_ig`).
        @Stored public var methods: String?
        @Stored public var selection: String?
        /// Sizes or thresholds, comma-separated as evaluated.
        @Stored public var sizes: String?
        @Stored public var thresholds: String?
        @Stored public var prune: Bool?
        @Stored public var chunkSize: Int?
        public init() {}
        enum CodingKeys: String, CodingKey {
            case edgesRun = "edges_run", methods, selection, sizes, thresholds, prune, chunkSize = "chunk_size"
        }
    }

    public struct Record: Codable, Equatable, Sendable {
        @Stored public var db: String?
        public init() {}
    }

    public var computation = Computation()
    public var record = Record()
    public init() {}
}

extension CircuitSelectionKind {
    /// `text` as typed, or nil.
    public init?(typed text: String) { self.init(rawValue: text.lowercased()) }
}

/// Parsing of `--methods`, `--sizes`, `--thresholds` and the default sizes.
public enum CircuitInput {
    /// `eap,eap-ig,exact` as typed (`eap_ig` too) → stored names, each once, in the order given.
    public static func methods(_ text: String) throws(CircuitError) -> [String] {
        var out: [String] = []
        for part in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces).lowercased() }) {
            let name: String
            switch part.replacingOccurrences(of: "-", with: "_") {
            case "eap": name = StoreName.eap
            case "eap_ig": name = StoreName.eapIG
            case "exact": name = StoreName.exact
            default: throw .badMethods(text)
            }
            if !out.contains(name) { out.append(name) }
        }
        if out.isEmpty { throw .badMethods(text) }
        return out
    }

    /// `0,10,100`: sizes ≥ 0, sorted, each once.
    public static func sizes(_ text: String) throws(CircuitError) -> [Int] {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !parts.isEmpty, parts.allSatisfy({ ($0 ?? -1) >= 0 }) else { throw .badSizes(text) }
        return Array(Set(parts.map { $0! })).sorted()
    }

    /// `0.1,0.01`: finite thresholds ≥ 0, each once, largest first (the smallest circuit first).
    public static func thresholds(_ text: String) throws(CircuitError) -> [Double] {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard !parts.isEmpty, parts.allSatisfy({ $0.map { $0 >= 0 && $0.isFinite } ?? false }) else { throw .badThresholds(text) }
        return Array(Set(parts.map { $0! })).sorted(by: >)
    }

    /// The default curve over a graph of `edges` edges: 0, then `points` sizes spaced evenly in
    /// log(size) from 1 to `edges` (rounded, each once), `edges` last.
    public static func defaultSizes(edges: Int, points: Int = 16) -> [Int] {
        guard edges > 0 else { return [0] }
        let steps = (0..<points).map { Int((pow(Double(edges), Double($0) / Double(points - 1))).rounded()) }
        return Array(Set([0, edges] + steps.map { min(max($0, 1), edges) })).sorted()
    }
}
