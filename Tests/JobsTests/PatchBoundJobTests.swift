import Analysis
import Foundation
import GPT2
import Jobs
import ResultsStore
import Support
import Testing

/// `PatchJob` with `bound` (`--atp-star-bound`): the stored rows are the documented procedure
/// (ranking by mean AtP* over the prompts of the most common length, subsets from stream
/// prompt · 64 + site, Welch's bound) redone here from the stored rows and the engine's
/// functions; a bound the job cannot compute (no AtP*, a shard, a residual-stream site) is
/// refused before anything is stored.
@Suite struct PatchBoundJobTests {
    typealias Folder = ShardMergeTests.Folder

    static func job(_ set: PromptSet, methods: [PatchMethod]) throws -> PatchJob {
        var job = try TaskCheckJobTests.patch(set, minGap: 0)
        job.methods = methods
        job.sites = [.mlpOut, .z]
        var settings = AtPStarBoundSettings()
        (settings.top, settings.subsets, settings.confidence, settings.seed) = (3, 4, 0.9, 11)
        job.bound = settings
        return job
    }

    @Test func storedBoundIsTheDocumentedProcedure() throws {
        let folder = try Folder()
        let db = try ResultsDatabase(path: folder.path("r.sqlite"))
        let set = try TaskCheckJobTests.promptSet(in: folder, name: "p.jsonl")
        let job = try Self.job(set, methods: [.activation, .atpStar])
        let run = try job.run(db: db)
        let stored = try db.summaries(runID: run).filter { $0.scope == PatchJob.boundScope }
        func value(_ site: PatchSite, _ metric: String) -> Double? { stored.first { $0.key == site.rawValue && $0.metric == metric }?.value }

        let lengths = Dictionary(grouping: set.examples, by: { $0.tokens.count })
        let T = lengths.keys.sorted().max { lengths[$0]!.count < lengths[$1]!.count }!
        let prompts = set.examples.filter { $0.tokens.count == T }
        let rows = try db.results(runID: run).filter { r in prompts.contains { $0.index == r.promptIndex } && r.quantity == StoreName.atpStar }
        for (s, site) in job.sites.enumerated() {
            let nodes = SiteIndex.all(site, nLayers: job.model.config.nLayers, nHeads: job.model.config.nHeads, T: T)
            let score = nodes.map { n in rows.filter { $0.site == site.rawValue && $0.layer == n.layer && $0.position == n.position && $0.head == n.head }
                .reduce(0) { $0 + $1.value / Double(prompts.count) } }
            var order = Array(nodes.indices)
            order.sort { score[$0] != score[$1] ? score[$0] > score[$1] : $0 < $1 }
            let unverified = order.dropFirst(3).sorted().map { nodes[$0] }
            var samples: [AtPStarBound.Sample] = []
            for ex in prompts {
                let members = AtPStarBound.subsets(count: 4, nodes: unverified.count, inclusion: 0.5, seed: 11, stream: UInt64(ex.index * 64 + s))
                let effects = try AtPStarBound.subsetEffects(
                    model: job.model, batch: .init(clean: [ex.tokens], corrupt: [ex.corruptTokens!], answer: [ex.answerID], wrong: [ex.wrongID!]),
                    subsets: [members.map { m in unverified.indices.filter { m[$0] }.map { unverified[$0] } }], direction: .denoise)[0]
                samples += zip(members, effects).map { AtPStarBound.Sample(members: $0, effect: $1) }
            }
            let want = AtPStarBound.bound(samples, nodes: unverified.count, confidence: 0.9).bound
            let got = try #require(value(site, "bound"))
            print("\(site): bound \(got), recomputed \(want), max |mean activation| unverified \(value(site, "max_abs_activation_unverified") ?? .nan)")
            #expect(abs(got - want) <= 1e-9 * max(1, abs(want)), "\(site)")
            #expect(value(site, "n_nodes") == Double(nodes.count) && value(site, "n_unverified") == Double(nodes.count - 3))
            #expect(value(site, "samples") == Double(4 * prompts.count) && value(site, "n_tokens") == Double(T))
        }
        let options = try JSONSerialization.jsonObject(with: Data(try #require(try db.run(id: run)).optionsJSON.utf8)) as! [String: Any]
        #expect(options["atp_star_bound_top"] as? Int == 3 && options["atp_star_bound_seed"] as? Int == 11)
    }

    @Test func refusedWithoutAtPStarOrOnResidualSitesBeforeAnythingIsStored() throws {
        let folder = try Folder()
        let db = try ResultsDatabase(path: folder.path("r.sqlite"))
        let set = try TaskCheckJobTests.promptSet(in: folder, name: "p.jsonl")
        #expect(throws: JobError.self) { try Self.job(set, methods: [.activation, .atp]).run(db: db) }
        var sharded = try Self.job(set, methods: [.activation, .atpStar])
        sharded.shard = try Shard(parsing: "0/2")
        #expect(throws: JobError.self) { try sharded.run(db: db) }
        for site in [PatchSite.residPre, .residMid] {
            var residual = try Self.job(set, methods: [.activation, .atpStar])
            residual.sites = [.z, site]
            #expect(throws: JobError.atpStarBound(reason: PatchSite.boundResidualReason(site))) { try residual.run(db: db) }
        }
        #expect(try db.runs().isEmpty)
    }
}
