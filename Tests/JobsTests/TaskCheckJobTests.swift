import Analysis
import Foundation
import GPT2
import Jobs
import ResultsStore
import Testing

/// The task check stored by `patch` and `dla` runs, on a prompt set with zero-gap prompts (their
/// corrupt prompt is the prompt itself), and the estimator errors that leave them out.
@Suite struct TaskCheckJobTests {
    typealias Folder = ShardMergeTests.Folder

    /// The 8 fixture prompts; those of `identical` get their own text as `corrupt` (gap exactly
    /// 0, no differing token); those of `drop` are left out.
    static func promptSet(in folder: Folder, name: String, identical: Set<Int> = [], drop: Set<Int> = []) throws -> PromptSet {
        let lines = try String(contentsOf: DLATests.fixtures.appendingPathComponent("reference/dla/prompts.jsonl"), encoding: .utf8)
            .split(separator: "\n").map(String.init)
        var out: [String] = []
        for (i, line) in lines.enumerated() where !drop.contains(i) {
            var object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: String]
            if identical.contains(i) { object["corrupt"] = object["prompt"] }
            out.append(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
        }
        let url = URL(fileURLWithPath: folder.path(name))
        try (out.joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
        return try PromptSet.load(url: url, tokenizer: try DLATests.tokenizer(), skipInvalid: false)
    }

    static let checkpoint = DLATests.fixtures.appendingPathComponent("models/tiny-ln").path

    static func patch(_ set: PromptSet, minGap: Double) throws -> PatchJob {
        let checkpoint = try Checkpoint.open(Self.checkpoint)
        let tok = try DLATests.tokenizer()
        var job = PatchJob(model: try GPT2Model(checkpoint: checkpoint), modelPath: checkpoint.directory.path,
                           modelHash: try checkpoint.weightsHash(), prompts: set, sites: [.residPre, .z],
                           methods: [.activation, .atp], direction: .denoise, tokenText: { tok.tokenString($0) },
                           toolVersion: "test")
        job.batchSize = 1
        job.minGap = minGap
        return job
    }

    /// Errors as (site, method, layer, normalised, metric) → value.
    static func errors(_ db: ResultsDatabase, _ id: Int64) throws -> [String: Double] {
        var out: [String: Double] = [:]
        for e in try db.estimatorErrors(runID: id) { out["\(e.site)|\(e.method)|\(e.layer ?? -1)|\(e.normalized)|\(e.metric)"] = e.value }
        return out
    }

    /// Prompts 1 and 4 have a zero gap: the run names them, their rows leave every estimator error
    /// (the errors equal those of a run without them), and with --min-gap 0 every one of their
    /// entries is a structural zero (n and the correlations unchanged, zeros counted apart).
    @Test func zeroGapPromptsLeaveTheErrors() throws {
        let folder = try Folder()
        let db = try ResultsDatabase(path: folder.path("r.sqlite"))
        let withZeroGaps = try Self.promptSet(in: folder, name: "zero.jsonl", identical: [1, 4])
        let run = try Self.patch(withZeroGaps, minGap: 1e-6).run(db: db)
        let record = try #require(try db.run(id: run))
        let options = try JSONSerialization.jsonObject(with: Data(record.optionsJSON.utf8)) as? [String: Any]
        #expect((options?["min_gap"] as? NSNumber)?.doubleValue == 1e-6, "\(record.optionsJSON)")

        let check = try #require(try StoredRuns.taskCheck(db: db, run: record))
        #expect(check.prompts == 8 && check.smallGap == [1, 4] && check.smallGapValues == [0, 0])
        #expect(check.minGap == 1e-6)
        #expect(try db.summaries(runID: run).contains { $0.scope == TaskCheck.scope && $0.metric == "n_small_gap" && $0.value == 2 })

        // first_diff: the prompt's length for the identical pairs; activation patching is exactly 0
        // before it and not after it (layer 0, the first differing position).
        let rows = try db.results(runID: run)
        let firstDiff = Dictionary(uniqueKeysWithValues: rows.filter { $0.quantity == StoreName.firstDiff }.map { ($0.promptIndex, Int($0.value)) })
        #expect(firstDiff.count == 8)
        for ex in withZeroGaps.examples {
            let f = try #require(firstDiff[ex.index])
            let corrupt = try #require(ex.corruptTokens)
            #expect(Array(ex.tokens.prefix(f)) == Array(corrupt.prefix(f)), "prompt \(ex.index): \(f)")
            #expect([1, 4].contains(ex.index) ? f == ex.tokens.count : ex.tokens[f] != corrupt[f], "prompt \(ex.index): \(f)")
            let layer0 = rows.filter { $0.promptIndex == ex.index && $0.site == "resid_pre" && $0.layer == 0 && $0.quantity == StoreName.activation }
            #expect(layer0.filter { $0.position! < f }.allSatisfy { $0.value == 0 })
            if f < ex.tokens.count { #expect(layer0.first { $0.position == f }!.value != 0) }
        }

        let without = try Self.patch(try Self.promptSet(in: folder, name: "without.jsonl", drop: [1, 4]), minGap: 1e-6).run(db: db)
        let a = try Self.errors(db, run), b = try Self.errors(db, without)
        #expect(Set(a.keys) == Set(b.keys) && !a.isEmpty)
        for (key, value) in a { #expect(value == b[key]! || (value.isNaN && b[key]!.isNaN), "\(key): \(value) vs \(b[key]!)") }

        let kept = try Self.patch(withZeroGaps, minGap: 0).run(db: db)
        let c = try Self.errors(db, kept)
        for (key, value) in b where !key.hasSuffix("|n_structural_zeros") && !key.contains("|true|") {
            #expect(abs(value - c[key]!) <= 1e-12 * max(1, abs(value)) || (value.isNaN && c[key]!.isNaN), "\(key): \(value) vs \(c[key]!)")
        }
        // Two prompts of 14 (or 12) tokens more zeros: resid_pre has 2 layers × T positions each, z 2 layers × 4 heads.
        let lengths = [1, 4].map { withZeroGaps.examples[$0].tokens.count }
        #expect(c["resid_pre|atp|-1|false|n_structural_zeros"]! - b["resid_pre|atp|-1|false|n_structural_zeros"]! == Double(2 * lengths.reduce(0, +)))
        #expect(c["z|atp|-1|false|n_structural_zeros"]! - b["z|atp|-1|false|n_structural_zeros"]! == 16)
        print("zero-gap prompts: resid_pre atp n \(a["resid_pre|atp|-1|false|n"]!), zeros \(a["resid_pre|atp|-1|false|n_structural_zeros"]!); with --min-gap 0 zeros \(c["resid_pre|atp|-1|false|n_structural_zeros"]!)")
    }

    /// `dla` on a prompt set with corrupt prompts stores the same clean and corrupt logit
    /// differences as `patch` computes, hence the same task check, and its NMAE does not depend
    /// on --min-gap.
    @Test func dlaStoresTheSameTaskCheckAsPatch() throws {
        let folder = try Folder()
        let db = try ResultsDatabase(path: folder.path("r.sqlite"))
        let set = try Self.promptSet(in: folder, name: "zero.jsonl", identical: [1, 4])
        let patch = try Self.patch(set, minGap: 0.01).run(db: db)
        let tok = try DLATests.tokenizer()
        let checkpoint = try Checkpoint.open(Self.checkpoint)
        func dla(_ minGap: Double) throws -> Int64 {
            var job = DLAJob(model: try GPT2Model(checkpoint: checkpoint), modelPath: checkpoint.directory.path,
                             modelHash: try checkpoint.weightsHash(), input: .prompts(set), decode: { tok.decode($0) },
                             toolVersion: "test")
            job.batchSize = 3
            job.minGap = minGap
            return try job.run(db: db)
        }
        let run = try dla(0.01)
        func metrics(_ id: Int64) throws -> [String: Double] {
            Dictionary(uniqueKeysWithValues: try db.results(runID: id, site: StoreName.metricSite)
                .filter { $0.quantity != StoreName.firstDiff }.map { ("\($0.promptIndex)|\($0.quantity)", $0.value) })
        }
        let fromDLA = try metrics(run), fromPatch = try metrics(patch)
        #expect(fromDLA.count == 16 && Set(fromDLA.keys) == Set(fromPatch.keys))
        for (key, value) in fromDLA { #expect(abs(value - fromPatch[key]!) < 1e-5, "\(key): \(value) vs \(fromPatch[key]!)") }
        func check(_ id: Int64) throws -> TaskCheck? { try db.run(id: id).flatMap { try StoredRuns.taskCheck(db: db, run: $0) } }
        let a = try #require(try check(run)), b = try #require(try check(patch))
        #expect(a.smallGap == b.smallGap && a.smallGap.contains(1) && a.smallGap.contains(4))
        #expect(abs(a.meanClean - b.meanClean) < 1e-5 && a.fractionCorrect == b.fractionCorrect)
        let other = try dla(5)
        func nmae(_ id: Int64) throws -> [SummaryRow] { try db.summaries(runID: id).filter { $0.scope != TaskCheck.scope && $0.scope != TaskCheck.smallGapScope } }
        #expect(try nmae(run) == nmae(other))
        #expect(try check(other)?.passed == false)
    }
}
