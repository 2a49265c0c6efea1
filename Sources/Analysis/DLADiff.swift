import Foundation

/// Comparison of two DLA runs on the same prompt set (`lnlens diff A B`), computed from their
/// rows over the prompts stored in both. NMAE values are in percent (`Metrics.nmae`; nil when
/// undefined); a layer's NMAE is over that layer's heads. Ranks are by mean |direct effect| over
/// prompts (how much a head matters, whichever way it pushes: `lnlens query top-heads`'s order),
/// 1 = largest, ties averaged.
public struct DLADiff: Codable, Sendable, Equatable {
    /// One side of the diff: which run, and its NMAE over all heads.
    public struct Side: Codable, Sendable, Equatable {
        public var runID: Int64
        public var modelPath: String
        public var modelHash: String
        public var lnMode: String
        public var status: String
        public var headNMAE: Double?

        enum CodingKeys: String, CodingKey {
            case runID = "run_id", modelPath = "model_path", modelHash = "model_hash", lnMode = "ln_mode", status
            case headNMAE = "head_nmae"
        }

        public init(runID: Int64, modelPath: String, modelHash: String, lnMode: String, status: String) {
            self.runID = runID
            self.modelPath = modelPath
            self.modelHash = modelHash
            self.lnMode = lnMode
            self.status = status
        }
    }

    public struct Layer: Codable, Sendable, Equatable {
        public var layer: Int
        public var nmaeA: Double?
        public var nmaeB: Double?
        enum CodingKeys: String, CodingKey { case layer, nmaeA = "nmae_a", nmaeB = "nmae_b" }
    }

    public struct Head: Codable, Sendable, Equatable {
        /// Encoded as `L{l}H{h}`.
        public var component: Component
        public var layer: Int
        public var head: Int
        public var nmaeA: Double?
        public var nmaeB: Double?
        public var meanDLAA: Double
        public var meanDLAB: Double
        public var meanDEA: Double
        public var meanDEB: Double
        /// Mean |direct effect| over prompts: what the ranks order.
        public var meanAbsDEA: Double
        public var meanAbsDEB: Double
        public var rankA: Double
        public var rankB: Double
        /// rankB − rankA: positive means the head fell in B.
        public var rankShift: Double

        enum CodingKeys: String, CodingKey {
            case component, layer, head, nmaeA = "nmae_a", nmaeB = "nmae_b"
            case meanDLAA = "mean_dla_a", meanDLAB = "mean_dla_b", meanDEA = "mean_de_a", meanDEB = "mean_de_b"
            case meanAbsDEA = "mean_abs_de_a", meanAbsDEB = "mean_abs_de_b"
            case rankA = "rank_a", rankB = "rank_b", rankShift = "rank_shift"
        }
    }

    public var a: Side
    public var b: Side
    public var promptSetHash: String
    public var nPrompts: Int
    /// Prompts stored in both runs, over which everything below is computed.
    public var promptsCompared: Int
    /// By layer.
    public var layers: [Layer]
    /// By layer, then head.
    public var heads: [Head]
    /// Spearman rank correlation of the heads' mean |DE| between A and B (nil if undefined).
    public var spearman: Double?
    /// Heads whose rank moved most, largest |rankShift| first (moved heads only), at most `top`.
    public var rankMoves: [Head]
    /// Heads whose mean DE has opposite signs in A and B, largest |meanDEB − meanDEA| first.
    public var signFlips: [Head]
    /// Each side's task check (nil: not measured, e.g. text input or prompts without `wrong`).
    public var taskA: TaskCheck? = nil
    public var taskB: TaskCheck? = nil

    enum CodingKeys: String, CodingKey {
        case a, b, promptSetHash = "prompt_set_hash", nPrompts = "n_prompts", promptsCompared = "prompts_compared"
        case layers, heads, spearman, rankMoves = "rank_moves", signFlips = "sign_flips", taskA = "task_a", taskB = "task_b"
    }

    public enum Refusal: Error, Equatable {
        case differentHeads(Int, Int)
        case noCommonPrompts
    }

    /// Compares the head rows of two runs. `top` bounds `rankMoves`.
    public init(a: Side, rowsA: [ComponentAttribution], b: Side, rowsB: [ComponentAttribution],
                promptSetHash: String, nPrompts: Int, top: Int) throws(Refusal) {
        typealias Pairs = [Component: [Int: (dla: Double, de: Double)]]
        func heads(_ rows: [ComponentAttribution]) -> Pairs {
            var out: Pairs = [:]
            for r in rows where r.component.headLayer != nil { out[r.component, default: [:]][r.prompt] = (r.dla, r.directEffect) }
            return out
        }
        let pairsA = heads(rowsA), pairsB = heads(rowsB)
        guard Set(pairsA.keys) == Set(pairsB.keys) else { throw .differentHeads(pairsA.count, pairsB.count) }
        let common = Set(pairsA.values.flatMap(\.keys)).intersection(pairsB.values.flatMap(\.keys))
        guard !common.isEmpty else { throw .noCommonPrompts }

        struct Stats {
            var err = 0.0, mag = 0.0, dla = 0.0, de = 0.0, n = 0
            init(_ pairs: [Int: (dla: Double, de: Double)], _ prompts: Set<Int>) {
                for (p, v) in pairs where prompts.contains(p) {
                    err += abs(v.dla - v.de); mag += abs(v.de); dla += v.dla; de += v.de; n += 1
                }
            }
            var meanDLA: Double { n == 0 ? 0 : dla / Double(n) }
            var meanDE: Double { n == 0 ? 0 : de / Double(n) }
            var meanAbsDE: Double { n == 0 ? 0 : mag / Double(n) }
            static func nmae(_ s: [Stats]) -> Double? {
                let v = Metrics.nmae(sumAbsError: s.reduce(0) { $0 + $1.err }, sumAbsExact: s.reduce(0) { $0 + $1.mag },
                                     count: s.reduce(0) { $0 + $1.n })
                return v.isFinite ? v : nil
            }
        }
        let order = pairsA.keys.sorted()
        let statsA = order.map { Stats(pairsA[$0]!, common) }, statsB = order.map { Stats(pairsB[$0]!, common) }
        let ranksA = Metrics.ranks(statsA.map(\.meanAbsDE), descending: true)
        let ranksB = Metrics.ranks(statsB.map(\.meanAbsDE), descending: true)
        let rows: [Head] = order.indices.map { i in
            guard case let .head(l, h) = order[i] else { fatalError("heads only") }
            return Head(component: order[i], layer: l, head: h,
                        nmaeA: Stats.nmae([statsA[i]]), nmaeB: Stats.nmae([statsB[i]]),
                        meanDLAA: statsA[i].meanDLA, meanDLAB: statsB[i].meanDLA,
                        meanDEA: statsA[i].meanDE, meanDEB: statsB[i].meanDE,
                        meanAbsDEA: statsA[i].meanAbsDE, meanAbsDEB: statsB[i].meanAbsDE,
                        rankA: ranksA[i], rankB: ranksB[i], rankShift: ranksB[i] - ranksA[i])
        }
        layers = Set(rows.map(\.layer)).sorted().map { layer in
            let members = rows.indices.filter { rows[$0].layer == layer }
            return Layer(layer: layer, nmaeA: Stats.nmae(members.map { statsA[$0] }),
                         nmaeB: Stats.nmae(members.map { statsB[$0] }))
        }
        var sideA = a, sideB = b
        sideA.headNMAE = Stats.nmae(statsA)
        sideB.headNMAE = Stats.nmae(statsB)
        self.a = sideA
        self.b = sideB
        self.promptSetHash = promptSetHash
        self.nPrompts = nPrompts
        self.promptsCompared = common.count
        self.heads = rows
        let rho = Metrics.pearson(ranksA, ranksB)
        self.spearman = rho.isFinite ? rho : nil
        func byPosition(_ x: Head, _ y: Head) -> Bool { (x.layer, x.head) < (y.layer, y.head) }
        self.rankMoves = Array(rows.filter { $0.rankShift != 0 }
            .sorted { abs($0.rankShift) != abs($1.rankShift) ? abs($0.rankShift) > abs($1.rankShift) : byPosition($0, $1) }
            .prefix(max(0, top)))
        self.signFlips = rows.filter { $0.meanDEA * $0.meanDEB < 0 }
            .sorted {
                let da = abs($0.meanDEB - $0.meanDEA), db = abs($1.meanDEB - $1.meanDEA)
                return da != db ? da > db : byPosition($0, $1)
            }
    }
}
