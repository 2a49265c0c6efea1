import Analysis
import Foundation
import ResultsStore

/// An `edges` run read back: its aggregate rows (each edge's mean over prompts per method), its
/// estimators' NMAE against the exact effects, its task check. What `lnlens edges` prints and the
/// named query `top-edges` lists.
public struct EdgeRunReport: Sendable {
    /// One edge's means, by stored method (`eap`, `eap_ig`, `exact`).
    public struct Edge: Sendable {
        public var upstream: String
        public var downstream: String
        public var input: String?
        public var means: [String: Double]
        /// Prompts averaged per method (with `--exact top-K`, exact's may be fewer than the run's).
        public var prompts: [String: Int]
        public var name: String { "\(upstream)->\(downstream)" + (input.map { "<\($0)>" } ?? "") }
    }

    public var run: RunRecord
    public var prompts: Int
    /// Stored methods present, in `eap`, `eap_ig`, `exact` order.
    public var methods: [String]
    /// In the graph's order as stored (upstream, downstream, input).
    public var edges: [Edge]
    /// Estimator → (NMAE %, (prompt, edge) pairs) against `exact`.
    public var nmae: [String: (value: Double, pairs: Int)]
    public var task: TaskCheck?

    public init(db: ResultsDatabase, runID: Int64) throws {
        run = try db.run(id: runID, of: StoreName.edgesCommand, for: "reading edges")
        prompts = try db.counts(runID: runID).prompts
        var byEdge: [String: Edge] = [:], order: [String] = []
        for r in try db.edges(runID: runID, aggregate: true) {
            if byEdge[r.edge] == nil {
                byEdge[r.edge] = Edge(upstream: r.upstream, downstream: r.downstream, input: r.input, means: [:], prompts: [:])
                order.append(r.edge)
            }
            byEdge[r.edge]!.means[r.method] = r.value
            byEdge[r.edge]!.prompts[r.method] = r.nPrompts
        }
        edges = order.map { byEdge[$0]! }
        let present = Set(edges.flatMap(\.means.keys))
        methods = [StoreName.eap, StoreName.eapIG, StoreName.exact].filter(present.contains)
        let summaries = try db.summaries(runID: runID).filter { $0.scope == StoreName.scopeEdges }
        var nmae: [String: (Double, Int)] = [:]
        for s in summaries where s.metric == StoreName.nmae {
            let n = summaries.first { $0.key == s.key && $0.metric == "n" }?.value ?? 0
            nmae[s.key] = (s.value, Int(n))
        }
        self.nmae = nmae
        task = try StoredRuns.taskCheck(db: db, run: run)
    }

    /// The `limit` edges of largest |mean `method`| (ties: graph order); edges without it last.
    public func top(_ limit: Int, by method: String) -> [Edge] {
        let ranked = edges.indices.sorted { a, b in
            let x = edges[a].means[method].map(abs) ?? -1, y = edges[b].means[method].map(abs) ?? -1
            return x != y ? x > y : a < b
        }
        return ranked.prefix(limit).map { edges[$0] }
    }

    /// Named query `top-edges RUN_ID`: the top edges by |mean `method`|, every method's mean and
    /// how many prompts exact's mean is over.
    public func topTable(limit: Int, by method: String) -> QueryResult {
        QueryResult(columns: ["upstream", "downstream", "input"] + methods + ["exact_prompts"], rows: top(limit, by: method).map { e in
            [.text(e.upstream), .text(e.downstream), e.input.map(Cell.text) ?? .null] + methods.map { m in e.means[m].map(Cell.double) ?? .null }
                + [e.prompts[StoreName.exact].map { .int(Int64($0)) } ?? .null]
        })
    }
}
