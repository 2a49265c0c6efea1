import Foundation
import GPT2
import ResultsStore

/// An edge attribution method of `lnlens edges --methods` (docs/patching.md "Edges").
public enum EdgeMethod: String, CaseIterable, Sendable {
    /// EAP: (a_u(clean) − a_u(corrupt)) · ∂m/∂(input of v) on the corrupted run.
    case eap
    /// EAP-IG ("inputs"): the gradient averaged over `--ig-steps` interpolations of the input embeddings.
    case eapIG = "eap-ig"

    /// `edges.method` of its rows.
    public var stored: String { self == .eap ? StoreName.eap : StoreName.eapIG }

    /// `eap,eap-ig` as typed (`eap_ig` too); each method once, in the order given.
    public static func parseList(_ text: String) throws(EdgeError) -> [EdgeMethod] {
        var methods: [EdgeMethod] = []
        for part in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) {
            guard let m = EdgeMethod(rawValue: part.replacingOccurrences(of: "_", with: "-")) else { throw .badMethods(text) }
            if !methods.contains(m) { methods.append(m) }
        }
        if methods.isEmpty { throw .badMethods(text) }
        return methods
    }
}

/// Which edges exact path patching scores (`--exact`): none, every edge, or per prompt the K
/// edges with the largest |EAP score| of that prompt (ties: the earlier edge in the graph's order).
public enum ExactEdges: Equatable, Sendable {
    case none, all, top(Int)

    /// `none`, `all` or `top-K` (K ≥ 1).
    public init?(_ text: String) {
        switch text {
        case "none": self = .none
        case "all": self = .all
        default:
            guard text.hasPrefix("top-"), let k = Int(text.dropFirst(4)), k >= 1 else { return nil }
            self = .top(k)
        }
    }

    public var name: String {
        switch self {
        case .none: "none"
        case .all: "all"
        case .top(let k): "top-\(k)"
        }
    }

    /// The edges scored for one prompt whose EAP scores are `eap`; nil: none.
    func edges(_ graph: EdgeGraph, eap: EdgeScores?) -> [EdgeIndex]? {
        switch self {
        case .none: nil
        case .all: graph.edges
        case .top(let k): eap?.top(k)
        }
    }

    /// Exact edges per prompt on `graph`.
    func count(_ graph: EdgeGraph) -> Int {
        switch self {
        case .none: 0
        case .all: graph.edgeCount
        case .top(let k): min(k, graph.edgeCount)
        }
    }
}

/// Bad `lnlens edges` input, one line naming the option and what to do.
public enum EdgeError: LocalizedError, Equatable, Sendable {
    case badMethods(String)
    case badExact(String)
    case badIGSteps(Int)
    case exactTopNeedsEAP(String)
    case tooManyExact(model: String, edges: Int, limit: Int)

    public var errorDescription: String? {
        switch self {
        case .badMethods(let text):
            "--methods \(text): give eap, eap-ig or both comma-separated, e.g. eap,eap-ig"
        case .badExact(let text):
            "--exact \(text): give none, all or top-K with K ≥ 1, e.g. top-50 (the K edges of largest |EAP| per prompt)"
        case .badIGSteps(let n):
            "--ig-steps \(n): give a number of interpolation steps ≥ 1, e.g. 5"
        case .exactTopNeedsEAP(let exact):
            "--exact \(exact) ranks the edges by their EAP score: add eap to --methods"
        case let .tooManyExact(model, edges, limit):
            "--exact all: \(model) has \(edges) edges, each 3 forward passes per prompt (limit \(limit) edges); give --exact top-K, e.g. top-100"
        }
    }
}

/// The options of an `edges` run.
public struct EdgeOptions: ShardOptions {
    public struct Computation: Codable, Equatable, Sendable {
        @Stored public var prependBOS: Bool?
        @Stored public var skipInvalid: Bool?
        /// `EdgeMethod`s, comma-separated as typed (`eap,eap-ig`).
        @Stored public var methods: String?
        @Stored public var igSteps: Int?
        /// `ExactEdges.name`.
        @Stored public var exact: String?
        @Stored public var chunkSize: Int?
        @Stored public var minGap: Double?
        public init() {}
        enum CodingKeys: String, CodingKey {
            case prependBOS = "prepend_bos", skipInvalid = "skip_invalid", methods, igSteps = "ig_steps", exact
            case chunkSize = "chunk_size", minGap = "min_gap"
        }
    }

    public struct Record: Codable, Equatable, Sendable, ShardRecord {
        @Stored public var models: String?
        @Stored public var db: String?
        @Stored public var prompts: String?
        @Stored public var processing: [String: Bool]?
        /// Not recorded by `edges` (its shard is the run's `shard_index`).
        @Stored public var shard: String?
        public init() {}
    }

    public var computation = Computation()
    public var record = Record()
    public init() {}

    public var minGap: Double { Jobs.minGap(computation.minGap) }
}
