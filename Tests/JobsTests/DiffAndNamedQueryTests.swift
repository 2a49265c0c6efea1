import Analysis
import Foundation
import Jobs
import ResultsStore
import Testing

/// A hand-made pair of runs: 2 layers × 2 heads, 3 prompts. Mean DE per head is chosen so the
/// ranks are easy to read; per-prompt values spread around it.
struct HandMade {
    static let heads = ["L0H0", "L0H1", "L1H0", "L1H1"]
    static let meanDEA: [Double] = [3, 1, -2, 0.5]   // ranks 1, 2, 4, 3
    static let meanDEB: [Double] = [2, -1, 4, 0.2]   // ranks 2, 4, 1, 3
    static let spread: [Double] = [-1, 0.5, 0.5]

    /// de[head][prompt], dla[head][prompt] of a run.
    static func values(means: [Double], dlaScale: Double) -> (de: [[Double]], dla: [[Double]]) {
        let de = means.map { m in spread.map { m + $0 } }
        let dla = de.enumerated().map { h, row in row.map { $0 * dlaScale + 0.1 * Double(h) } }
        return (de, dla)
    }

    static func write(_ db: ResultsDatabase, means: [Double], dlaScale: Double, run: RunRecord) throws -> Int64 {
        let id = try db.beginRun(run)
        let (de, dla) = values(means: means, dlaScale: dlaScale)
        var rows: [ResultRow] = []
        for (h, head) in heads.enumerated() {
            let site = Component(name: head)!.site
            for p in spread.indices {
                rows.append(ResultRow(promptIndex: p, site: site.name, layer: site.layer, head: site.head,
                                      quantity: "direct_effect", value: de[h][p]))
                rows.append(ResultRow(promptIndex: p, site: site.name, layer: site.layer, head: site.head,
                                      quantity: "dla", value: dla[h][p]))
            }
            // Non-head components must not enter head NMAE.
            rows.append(ResultRow(promptIndex: 0, site: "mlp_out", layer: h % 2, quantity: "dla", value: 100))
            rows.append(ResultRow(promptIndex: 0, site: "mlp_out", layer: h % 2, quantity: "direct_effect", value: -100))
        }
        let prompts = spread.indices.map { PromptRow(promptIndex: $0, prompt: "p\($0)", answer: " a", wrong: nil, nTokens: 3) }
        try db.writeBatch(runID: id, prompts: prompts, values: rows, firstPrompt: 0, lastPrompt: 2)
        try db.finishRun(runID: id, status: .completed, summaries: [], error: nil)
        return id
    }

    /// NMAE straight from the definition: mean |DLA − DE| / mean |DE| · 100 over the given heads.
    static func nmae(_ v: (de: [[Double]], dla: [[Double]]), heads: [Int]) -> Double {
        var errors: [Double] = [], scales: [Double] = []
        for h in heads {
            for p in spread.indices {
                errors.append(abs(v.dla[h][p] - v.de[h][p]))
                scales.append(abs(v.de[h][p]))
            }
        }
        let meanError = errors.reduce(0, +) / Double(errors.count)
        return meanError / (scales.reduce(0, +) / Double(scales.count)) * 100
    }
}

@Suite struct DiffTests {
    @Test func diffMatchesIndependentComputation() throws {
        let db = try ResultsDatabase.inMemory()
        let a = try HandMade.write(db, means: HandMade.meanDEA, dlaScale: 1.5, run: sampleRun(nPrompts: 3))
        let b = try HandMade.write(
            db, means: HandMade.meanDEB, dlaScale: 1, run: sampleRun(lnMode: "ln-free", nPrompts: 3, modelPath: "models/lnfree"))
        let diff = try StoredRuns.dlaDiff(db: db, runA: a, runB: b, top: 10)
        let va = HandMade.values(means: HandMade.meanDEA, dlaScale: 1.5)
        let vb = HandMade.values(means: HandMade.meanDEB, dlaScale: 1)
        let close = { (x: Double?, y: Double) in x.map { abs($0 - y) < 1e-9 } ?? false }

        #expect(diff.promptsCompared == 3 && diff.nPrompts == 3 && diff.a.lnMode == "layernorm" && diff.b.lnMode == "ln-free")
        #expect(close(diff.a.headNMAE, HandMade.nmae(va, heads: [0, 1, 2, 3])))
        #expect(close(diff.b.headNMAE, HandMade.nmae(vb, heads: [0, 1, 2, 3])))
        #expect(diff.layers.map(\.layer) == [0, 1])
        for layer in 0...1 {
            #expect(close(diff.layers[layer].nmaeA, HandMade.nmae(va, heads: [2 * layer, 2 * layer + 1])))
            #expect(close(diff.layers[layer].nmaeB, HandMade.nmae(vb, heads: [2 * layer, 2 * layer + 1])))
        }
        #expect(diff.heads.map(\.component.description) == HandMade.heads)
        for h in 0..<4 {
            #expect(close(diff.heads[h].nmaeA, HandMade.nmae(va, heads: [h])))
            #expect(close(diff.heads[h].nmaeB, HandMade.nmae(vb, heads: [h])))
            #expect(abs(diff.heads[h].meanDEA - HandMade.meanDEA[h]) < 1e-12)
            #expect(abs(diff.heads[h].meanDEB - HandMade.meanDEB[h]) < 1e-12)
            #expect(abs(diff.heads[h].meanDLAA - (1.5 * HandMade.meanDEA[h] + 0.1 * Double(h))) < 1e-12)
        }
        // Ranks by mean |DE| (how much a head matters, whichever way it pushes), by hand: DE = mean
        // + (−1, 0.5, 0.5). A: |DE| means 3, 1, 2, 0.8333 → ranks 1, 3, 2, 4 (L1H0, mean DE −2,
        // ranks second: by signed DE it would be last). B: 2, 1, 4, 0.7333 → ranks 2, 3, 1, 4.
        for h in 0..<4 {
            let absA = HandMade.spread.map { abs(HandMade.meanDEA[h] + $0) }.reduce(0, +) / 3
            #expect(abs(diff.heads[h].meanAbsDEA - absA) < 1e-12)
        }
        #expect(diff.heads.map(\.rankA) == [1, 3, 2, 4])
        #expect(diff.heads.map(\.rankB) == [2, 3, 1, 4])
        // Spearman = 1 − 6 Σd² / (n(n² − 1)), d = (1, 0, −1, 0): 1 − 6·2/60 = 0.8.
        #expect(close(diff.spearman, 0.8))
        #expect(diff.rankMoves.map(\.component.description) == ["L0H0", "L1H0"])
        #expect(diff.rankMoves.map(\.rankShift) == [1, -1])
        // Signs flip for L0H1 (1 → −1) and L1H0 (−2 → 4); the larger change first.
        #expect(diff.signFlips.map(\.component.description) == ["L1H0", "L0H1"])
        #expect(try StoredRuns.dlaDiff(db: db, runA: a, runB: b, top: 1).rankMoves.map(\.component.description) == ["L0H0"])

        let json = try JSONEncoder().encode(diff)
        #expect(try JSONDecoder().decode(DLADiff.self, from: json) == diff)
    }

    @Test func spearmanWithTiesUsesAverageRanks() {
        #expect(Metrics.ranks([5, 1, 5, 3], descending: true) == [1.5, 4, 1.5, 3])
        #expect(Metrics.ranks([5, 1, 5, 3]) == [3.5, 1, 3.5, 2])
        #expect(Metrics.pearson([1, 2, 3], [1, 2, 3]) == 1)
        #expect(Metrics.pearson([1, 2, 3], [3, 2, 1]) == -1)
        #expect(Metrics.pearson([1, 1, 1], [1, 2, 3]).isNaN)
        #expect(Metrics.pearson([1], [1]).isNaN)
    }

    @Test func diffRefusesRunsThatCannotBeCompared() throws {
        let db = try ResultsDatabase.inMemory()
        let a = try HandMade.write(db, means: HandMade.meanDEA, dlaScale: 1.5, run: sampleRun(nPrompts: 3))
        let otherSet = try HandMade.write(db, means: HandMade.meanDEB, dlaScale: 1, run: sampleRun(promptSetHash: "zzz", nPrompts: 3))
        let moreRun = sampleRun(nPrompts: 4)
        let more = try db.beginRun(moreRun)
        let patching = try db.beginRun(sampleRun(command: "patch", nPrompts: 3))

        let e1 = #expect(throws: JobError.self) { try StoredRuns.dlaDiff(db: db, runA: a, runB: otherSet, top: 8) }
        #expect(message(e1!).hasPrefix("cannot diff runs \(a) and \(otherSet): different prompt sets"))
        #expect(throws: JobError.diffRefused(runA: a, runB: more, reason: "different numbers of prompts (3 vs 4)")) {
            try StoredRuns.dlaDiff(db: db, runA: a, runB: more, top: 8)
        }
        #expect(throws: JobError.diffRefused(runA: a, runB: patching, reason: "run \(patching) is a patch run; diff compares two dla runs or two patch runs")) {
            try StoredRuns.dlaDiff(db: db, runA: a, runB: patching, top: 8)
        }
        #expect(throws: JobError.diffRefused(runA: 99, runB: a, reason: "no run 99 in :memory:")) {
            try StoredRuns.dlaDiff(db: db, runA: 99, runB: a, top: 8)
        }
    }
}

@Suite struct NamedQueryTests {
    @Test func nmaeAndTopHeads() throws {
        let db = try ResultsDatabase.inMemory()
        let a = try HandMade.write(db, means: HandMade.meanDEA, dlaScale: 1.5, run: sampleRun(nPrompts: 3))
        _ = try db.beginRun(sampleRun(command: "patch"))
        let va = HandMade.values(means: HandMade.meanDEA, dlaScale: 1.5)

        let nmae = try StoredRuns.nmaeTable(db: db)
        #expect(nmae.columns == ["id", "model", "ln_mode", "head_nmae", "prompts", "status"])
        #expect(nmae.rows.count == 1)  // dla runs only
        guard case .double(let value) = nmae.rows[0][3] else { Issue.record("head_nmae is \(nmae.rows[0][3])"); return }
        #expect(abs(value - HandMade.nmae(va, heads: [0, 1, 2, 3])) < 1e-9)
        #expect(nmae.rows[0][4] == .int(3) && nmae.rows[0][5] == .text("completed"))

        let top = try StoredRuns.topHeads(db: db, runID: a, limit: 2)
        #expect(top.columns == ["component", "layer", "head", "mean_abs_de", "mean_dla", "mean_de", "nmae", "prompts"])
        // mean |DE| per head: L0H0 (2+3.5+3.5)/3 = 3, L1H0 (3+1.5+1.5)/3 = 2.
        #expect(top.rows.map { $0[0] } == [.text("L0H0"), .text("L1H0")])
        #expect(top.rows[1][1] == .int(1) && top.rows[1][2] == .int(0))
        #expect(top.rows[0][3] == .double(3) && top.rows[0][5] == .double(3) && top.rows[0][7] == .int(3))
        #expect(try StoredRuns.topHeads(db: db, runID: a, limit: 20).rows.count == 4)

        let runs = try db.runsTable()
        #expect(runs.rows.map { $0[0] } == [.int(1), .int(2)])
    }

    @Test func namedQueryErrors() throws {
        let db = try ResultsDatabase.inMemory()
        let patch = try db.beginRun(sampleRun(command: "patch"))
        #expect(throws: ResultsStoreError.noSuchRun(id: 9, path: ":memory:")) { try StoredRuns.topHeads(db: db, runID: 9, limit: 1) }
        let wrong = #expect(throws: JobError.self) { try StoredRuns.topHeads(db: db, runID: patch, limit: 1) }
        #expect(message(wrong!) == "run \(patch) is a patch run; top-heads needs a dla run (see `lnlens runs`)")
    }
}

func sampleRun(
    command: String = "dla", lnMode: String = "layernorm", promptSetHash: String = "abc123", nPrompts: Int = 4,
    modelPath: String = "models/gpt2"
) -> RunRecord {
    RunRecord(
        command: command, optionsJSON: #"{"batch_size":2}"#, modelPath: modelPath, modelHash: "hash-\(modelPath)",
        lnMode: lnMode, processingJSON: #"{"fold_ln":true}"#, promptSetPath: "prompts/ioi.jsonl",
        promptSetHash: promptSetHash, nPrompts: nPrompts, toolVersion: "0.1.0-test")
}

/// The one-line message of an error.
func message(_ error: any Error) -> String {
    (error as? LocalizedError)?.errorDescription ?? "\(error)"
}
