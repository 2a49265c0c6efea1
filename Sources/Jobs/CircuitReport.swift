import Analysis
import Foundation
import ResultsStore

/// A `circuit` run read back: its curves, its circuits' edges, its task check. What `lnlens
/// circuit` prints, `diff` compares and `report` draws.
public struct CircuitRunReport: Sendable {
    public var run: RunRecord
    public var edgesRun: Int64?
    public var curves: [FaithfulnessRow]
    public var edges: [CircuitEdgeRow]
    public var task: TaskCheck?

    public init(db: ResultsDatabase, runID: Int64) throws {
        run = try db.run(id: runID, of: StoreName.circuitCommand, for: "reading circuits")
        edgesRun = CircuitOptions(json: run.optionsJSON).computation.edgesRun.map(Int64.init)
        curves = try db.faithfulness(runID: runID)
        edges = try db.circuitEdges(runID: runID)
        task = try StoredRuns.taskCheck(db: db, run: run)
    }

    /// The curves' (method, selection) pairs, in stored order.
    public var series: [(method: String, selection: String)] {
        var out: [(String, String)] = []
        for c in curves where !out.contains(where: { $0 == (c.method, c.selection) }) { out.append((c.method, c.selection)) }
        return out
    }

    /// The edges (`CircuitEdgeRow.edge`) of one circuit.
    public func edgeSet(method: String, selection: String, requested: Double) -> Set<String> {
        Set(edges.filter { $0.method == method && $0.selection == selection && $0.requested == requested }.map(\.edge))
    }
}

/// overlap@k of two runs' circuits: for each (method, selection, requested) both runs hold,
/// |A ∩ B| / max(|A|, |B|) of their edge sets (edges named as hannamw/EAP-IG names them; 1 when
/// the sets are equal, 0 when disjoint or both empty). With top-n and no pruning both sets have n
/// edges and this is the usual |A ∩ B| / n.
public struct CircuitOverlap: Codable, Sendable, Equatable {
    public var method: String
    public var selection: String
    public var requested: Double
    public var edgesA: Int, edgesB: Int, shared: Int
    public var overlap: Double

    enum CodingKeys: String, CodingKey {
        case method, selection, requested, edgesA = "edges_a", edgesB = "edges_b", shared, overlap
    }

    public static func between(_ a: CircuitRunReport, _ b: CircuitRunReport) -> [CircuitOverlap] {
        a.curves.compactMap { c in
            guard b.curves.contains(where: { $0.method == c.method && $0.selection == c.selection && $0.requested == c.requested }) else { return nil }
            let x = a.edgeSet(method: c.method, selection: c.selection, requested: c.requested)
            let y = b.edgeSet(method: c.method, selection: c.selection, requested: c.requested)
            let shared = x.intersection(y).count, most = max(x.count, y.count)
            return CircuitOverlap(method: c.method, selection: c.selection, requested: c.requested, edgesA: x.count, edgesB: y.count,
                                  shared: shared, overlap: most == 0 ? 0 : Double(shared) / Double(most))
        }
    }
}
