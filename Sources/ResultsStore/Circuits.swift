import Foundation
import GRDB
import Support

/// One point of a stored faithfulness curve (`faithfulness`, migration v5).
public struct FaithfulnessRow: Codable, Sendable, Equatable {
    /// The edges run's method whose mean scores chose the circuit: `eap`, `eap_ig`, `exact`.
    public var method: String
    /// `top`, `greedy`, `threshold`.
    public var selection: String
    /// The size asked for (top, greedy) or the |score| threshold.
    public var requested: Double
    /// Edges in the circuit after pruning.
    public var edges: Int
    /// Means over the run's prompts: the circuit's metric, the clean and the corrupted run's.
    public var metric: Double, clean: Double, corrupt: Double
    /// (metric − corrupt) / (clean − corrupt) of the means; nil when clean = corrupt.
    public var normalized: Double?
    public var nPrompts: Int

    enum CodingKeys: String, CodingKey {
        case method, selection, requested, edges, metric, clean, corrupt, normalized, nPrompts = "n_prompts"
    }

    public init(method: String, selection: String, requested: Double, edges: Int, metric: Double, clean: Double, corrupt: Double,
                normalized: Double?, nPrompts: Int) {
        (self.method, self.selection, self.requested, self.edges) = (method, selection, requested, edges)
        (self.metric, self.clean, self.corrupt, self.normalized, self.nPrompts) = (metric, clean, corrupt, normalized, nPrompts)
    }
}

/// One edge of a stored circuit (`circuit_edges`, migration v5).
public struct CircuitEdgeRow: Codable, Sendable, Equatable, Hashable {
    public var method: String
    public var selection: String
    public var requested: Double
    public var upstream: String
    public var downstream: String
    public var input: String?
    /// The edge's mean score by `method` (what selected it).
    public var score: Double

    public init(method: String, selection: String, requested: Double, upstream: String, downstream: String, input: String?,
                score: Double) {
        (self.method, self.selection, self.requested) = (method, selection, requested)
        (self.upstream, self.downstream, self.input, self.score) = (upstream, downstream, input, score)
    }

    /// As `EdgeRow.edge`: `a0.h1->a1.h2<q>`.
    public var edge: String { "\(upstream)->\(downstream)" + (input.map { "<\($0)>" } ?? "") }
}

/// Names of `lnlens circuit` runs.
extension StoreName {
    public static let circuitCommand = "circuit"
    /// `results` site of a circuit run's per-prompt circuit metric; its quantity is
    /// `CircuitKey.quantity` (`eap_ig/top/100`).
    public static let circuitSite = "circuit"
    public static let selections = ["top", "greedy", "threshold"]
}

extension ResultsDatabase {
    /// Stores a circuit run's curves and edge sets and marks it completed, in one transaction: a
    /// reader never sees a completed circuit run without them.
    public func finishCircuitRun(runID: Int64, summaries: [SummaryRow], faithfulness: [FaithfulnessRow], circuitEdges: [CircuitEdgeRow],
                                 owner: ProcessIdentity = .current) throws {
        func refuse(_ reason: String) -> ResultsStoreError { .invalidBatch(id: runID, reason: reason, path: path) }
        for f in faithfulness where !StoreName.selections.contains(f.selection) || f.metric.isNaN || f.requested.isNaN || f.nPrompts < 1 {
            throw refuse("faithfulness row \(f.method)/\(f.selection)/\(f.requested) is not storable")
        }
        for e in circuitEdges where e.score.isNaN || !StoreName.selections.contains(e.selection) {
            throw refuse("circuit edge \(e.edge) of \(e.method)/\(e.selection)/\(e.requested) is not storable")
        }
        try write("finishing run \(runID)") { db in
            _ = try ownedRun(db, id: runID, owner: owner)
            try Self.insert(db, runID: runID, faithfulness: faithfulness)
            try Self.insert(db, runID: runID, circuitEdges: circuitEdges)
            try Self.upsert(db, runID: runID, summaries: summaries)
            try Self.recordStoredCounts(db, runID: runID)
            try db.execute(sql: "UPDATE runs SET status = 'completed', ended_at = ?, error = NULL, heartbeat_at = ? WHERE id = ?",
                           arguments: [Date(), Date(), runID])
        }
    }

    static func insert(_ db: Database, runID: Int64, faithfulness: [FaithfulnessRow]) throws {
        let statement = try db.cachedStatement(sql: """
            INSERT OR REPLACE INTO faithfulness (run_id, method, selection, requested, edges, metric, clean, corrupt, normalized, n_prompts)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """)
        for f in faithfulness {
            try statement.execute(arguments: [runID, f.method, f.selection, f.requested, f.edges, f.metric, f.clean, f.corrupt,
                                              f.normalized.flatMap { $0.isFinite ? $0 : nil }, f.nPrompts])
        }
    }

    static func insert(_ db: Database, runID: Int64, circuitEdges: [CircuitEdgeRow]) throws {
        let statement = try db.cachedStatement(sql: """
            INSERT OR REPLACE INTO circuit_edges (run_id, method, selection, requested, upstream, downstream, input, score)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            """)
        for e in circuitEdges {
            try statement.execute(arguments: [runID, e.method, e.selection, e.requested, e.upstream, e.downstream, e.input, e.score])
        }
    }

    /// The run's faithfulness curves, by method, selection, requested.
    public func faithfulness(runID: Int64) throws -> [FaithfulnessRow] {
        try runRows("faithfulness", runID: runID, sql: """
            SELECT method, selection, requested, edges, metric, clean, corrupt, normalized, n_prompts FROM faithfulness
            WHERE run_id = ? ORDER BY method, selection, requested
            """) {
            FaithfulnessRow(method: try $0.decode(atIndex: 0), selection: try $0.decode(atIndex: 1), requested: try $0.decode(atIndex: 2),
                            edges: try $0.decode(atIndex: 3), metric: try $0.decode(atIndex: 4), clean: try $0.decode(atIndex: 5),
                            corrupt: try $0.decode(atIndex: 6), normalized: try $0.decode(atIndex: 7), nPrompts: try $0.decode(atIndex: 8))
        }
    }

    /// The run's circuit edges, by method, selection, requested, edge.
    public func circuitEdges(runID: Int64) throws -> [CircuitEdgeRow] {
        try runRows("circuit edges", runID: runID, sql: """
            SELECT method, selection, requested, upstream, downstream, input, score FROM circuit_edges
            WHERE run_id = ? ORDER BY method, selection, requested, upstream, downstream, ifnull(input, '')
            """) {
            CircuitEdgeRow(method: try $0.decode(atIndex: 0), selection: try $0.decode(atIndex: 1), requested: try $0.decode(atIndex: 2),
                           upstream: try $0.decode(atIndex: 3), downstream: try $0.decode(atIndex: 4), input: try $0.decode(atIndex: 5),
                           score: try $0.decode(atIndex: 6))
        }
    }
}
