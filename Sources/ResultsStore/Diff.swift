import Foundation
import GRDB

/// Comparison of two `dla` runs on the same prompt set (`lnlens diff A B`). NMAE values are in
/// percent and recomputed from the stored rows over the prompts stored in both runs:
/// NMAE over a set S = Σ_S |DLA − DE| / Σ_S |DE| · 100 (nil when Σ |DE| = 0). A layer's NMAE is
/// over that layer's heads. Ranks are by mean DE over prompts, 1 = largest, ties averaged.
public struct RunDiff: Codable, Sendable, Equatable {
    /// What identifies one side of the diff.
    public struct Side: Codable, Sendable, Equatable {
        public var runID: Int64
        public var modelPath: String
        public var modelHash: String
        public var lnMode: String
        public var status: RunStatus
        /// NMAE over all heads and compared prompts.
        public var headNMAE: Double?
    }

    public struct Layer: Codable, Sendable, Equatable {
        public var layer: Int
        public var nmaeA: Double?
        public var nmaeB: Double?
    }

    public struct Head: Codable, Sendable, Equatable {
        /// `L{l}H{h}`.
        public var component: String
        public var layer: Int
        public var head: Int
        public var nmaeA: Double?
        public var nmaeB: Double?
        public var meanDLAA: Double
        public var meanDLAB: Double
        public var meanDEA: Double
        public var meanDEB: Double
        public var rankA: Double
        public var rankB: Double
        /// rankB − rankA: positive means the head fell in B.
        public var rankShift: Double
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
    /// Spearman rank correlation of the heads' mean DE between A and B (nil if undefined).
    public var spearman: Double?
    /// Heads whose rank moved most, largest |rankShift| first (moved heads only).
    public var rankMoves: [Head]
    /// Heads whose mean DE has opposite signs in A and B, largest |meanDEB − meanDEA| first.
    public var signFlips: [Head]
}

extension ResultsDatabase {
    /// Compares two `dla` runs. Refused when a run is missing or not a dla run, when the prompt
    /// sets (hash or count) differ, when the runs have different heads, or when no prompt is
    /// stored in both. `top` bounds `rankMoves`.
    public func diff(runA: Int64, runB: Int64, top: Int = 10) throws -> RunDiff {
        func refuse(_ reason: String) -> ResultsStoreError { .diffRefused(runA: runA, runB: runB, reason: reason) }
        return try read("diffing runs \(runA) and \(runB)") { db in
            var records: [RunRecord] = []
            for id in [runA, runB] {
                guard let row = try Row.fetchOne(db, sql: "SELECT * FROM runs WHERE id = ?", arguments: [id]) else {
                    throw refuse("no run \(id) in \(path)")
                }
                let record = try Self.runRecord(row)
                if record.command != StoreName.dlaCommand {
                    throw refuse("run \(id) is a \(record.command) run, diff compares \(StoreName.dlaCommand) runs")
                }
                records.append(record)
            }
            let (ra, rb) = (records[0], records[1])
            if ra.promptSetHash != rb.promptSetHash {
                throw refuse("different prompt sets (\(ra.promptSetPath) hash \(ra.promptSetHash) vs \(rb.promptSetPath) hash \(rb.promptSetHash))")
            }
            if ra.nPrompts != rb.nPrompts {
                throw refuse("different numbers of prompts (\(ra.nPrompts) vs \(rb.nPrompts))")
            }
            let pairsA = try Self.headPairs(db, runID: runA)
            let pairsB = try Self.headPairs(db, runID: runB)
            if Set(pairsA.keys) != Set(pairsB.keys) {
                throw refuse("the runs have different heads (\(pairsA.count) vs \(pairsB.count)); diff compares one architecture")
            }
            let promptsA = Set(pairsA.values.flatMap(\.keys)), promptsB = Set(pairsB.values.flatMap(\.keys))
            let common = promptsA.intersection(promptsB)
            if common.isEmpty { throw refuse("no prompt has head results stored in both runs") }

            let heads = pairsA.keys.sorted { $0.layer != $1.layer ? $0.layer < $1.layer : $0.head < $1.head }
            let statsA = heads.map { HeadStats(pairsA[$0]!, prompts: common) }
            let statsB = heads.map { HeadStats(pairsB[$0]!, prompts: common) }
            let ranksA = descendingRanks(statsA.map(\.meanDE)), ranksB = descendingRanks(statsB.map(\.meanDE))
            let rows = heads.indices.map { i in
                RunDiff.Head(
                    component: heads[i].name, layer: heads[i].layer, head: heads[i].head,
                    nmaeA: statsA[i].nmae, nmaeB: statsB[i].nmae,
                    meanDLAA: statsA[i].meanDLA, meanDLAB: statsB[i].meanDLA,
                    meanDEA: statsA[i].meanDE, meanDEB: statsB[i].meanDE,
                    rankA: ranksA[i], rankB: ranksB[i], rankShift: ranksB[i] - ranksA[i])
            }
            let layers = Set(heads.map(\.layer)).sorted().map { layer in
                let members = heads.indices.filter { heads[$0].layer == layer }
                return RunDiff.Layer(
                    layer: layer, nmaeA: HeadStats.pooledNMAE(members.map { statsA[$0] }),
                    nmaeB: HeadStats.pooledNMAE(members.map { statsB[$0] }))
            }
            func side(_ r: RunRecord, _ stats: [HeadStats]) -> RunDiff.Side {
                .init(runID: r.id, modelPath: r.modelPath, modelHash: r.modelHash, lnMode: r.lnMode,
                      status: r.status, headNMAE: HeadStats.pooledNMAE(stats))
            }
            let moves = rows.filter { $0.rankShift != 0 }
                .sorted { abs($0.rankShift) != abs($1.rankShift) ? abs($0.rankShift) > abs($1.rankShift) : Self.headOrder($0, $1) }
            let flips = rows.filter { $0.meanDEA * $0.meanDEB < 0 }
                .sorted {
                    let da = abs($0.meanDEB - $0.meanDEA), db = abs($1.meanDEB - $1.meanDEA)
                    return da != db ? da > db : Self.headOrder($0, $1)
                }
            return RunDiff(
                a: side(ra, statsA), b: side(rb, statsB), promptSetHash: ra.promptSetHash, nPrompts: ra.nPrompts,
                promptsCompared: common.count, layers: layers, heads: rows,
                spearman: pearson(ranksA, ranksB), rankMoves: Array(moves.prefix(max(0, top))), signFlips: flips)
        }
    }

    private static func headOrder(_ x: RunDiff.Head, _ y: RunDiff.Head) -> Bool {
        x.layer != y.layer ? x.layer < y.layer : x.head < y.head
    }

    /// (DLA, DE) per head and prompt of one run.
    static func headPairs(_ db: Database, runID: Int64) throws -> [HeadName: [Int: (dla: Double, de: Double)]] {
        var pairs: [HeadName: [Int: (dla: Double, de: Double)]] = [:]
        let rows = try Row.fetchCursor(
            db, sql: "WITH \(NamedSQL.headPairs(oneRun: true)) SELECT component, layer, head, prompt_index, dla, de FROM head_pairs",
            arguments: [runID])
        while let row = try rows.next() {
            let name = HeadName(
                name: try row.decode(atIndex: 0), layer: try row.decode(atIndex: 1), head: try row.decode(atIndex: 2))
            pairs[name, default: [:]][try row.decode(atIndex: 3)] = (try row.decode(atIndex: 4), try row.decode(atIndex: 5))
        }
        return pairs
    }
}

struct HeadName: Hashable {
    var name: String
    var layer: Int
    var head: Int
}

/// Sums over the compared prompts of one head in one run.
struct HeadStats {
    var sumAbsError = 0.0, sumAbsDE = 0.0, sumDLA = 0.0, sumDE = 0.0
    var count = 0

    init(_ pairs: [Int: (dla: Double, de: Double)], prompts: Set<Int>) {
        for (prompt, pair) in pairs where prompts.contains(prompt) {
            sumAbsError += abs(pair.dla - pair.de)
            sumAbsDE += abs(pair.de)
            sumDLA += pair.dla
            sumDE += pair.de
            count += 1
        }
    }

    var meanDLA: Double { count == 0 ? 0 : sumDLA / Double(count) }
    var meanDE: Double { count == 0 ? 0 : sumDE / Double(count) }
    var nmae: Double? { Self.pooledNMAE([self]) }

    /// NMAE over the union of the heads' (prompt, head) pairs: mean |DLA − DE| / mean |DE| · 100.
    static func pooledNMAE(_ stats: [HeadStats]) -> Double? {
        let error = stats.reduce(0) { $0 + $1.sumAbsError }, scale = stats.reduce(0) { $0 + $1.sumAbsDE }
        return scale > 0 ? 100 * error / scale : nil
    }
}

/// Ranks with 1 = largest value; tied values share the mean of their ranks.
func descendingRanks(_ values: [Double]) -> [Double] {
    let order = values.indices.sorted { values[$0] > values[$1] }
    var ranks = [Double](repeating: 0, count: values.count)
    var start = 0
    while start < order.count {
        var end = start
        while end + 1 < order.count, values[order[end + 1]] == values[order[start]] { end += 1 }
        let shared = Double(start + end) / 2 + 1
        for k in start...end { ranks[order[k]] = shared }
        start = end + 1
    }
    return ranks
}

/// Pearson correlation; nil when fewer than two points or a constant series. Applied to ranks
/// it is Spearman's correlation (with ties handled by average ranks).
func pearson(_ x: [Double], _ y: [Double]) -> Double? {
    guard x.count == y.count, x.count >= 2 else { return nil }
    let n = Double(x.count)
    let mx = x.reduce(0, +) / n, my = y.reduce(0, +) / n
    var sxy = 0.0, sxx = 0.0, syy = 0.0
    for (a, b) in zip(x, y) {
        sxy += (a - mx) * (b - my)
        sxx += (a - mx) * (a - mx)
        syy += (b - my) * (b - my)
    }
    guard sxx > 0, syy > 0 else { return nil }
    return sxy / (sxx * syy).squareRoot()
}
