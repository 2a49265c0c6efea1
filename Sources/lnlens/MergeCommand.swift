import ArgumentParser
import Foundation
import Jobs
import ResultsStore
import Support

struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Combine the shard databases of a sharded run (dla, patch, edges or eval --shard I/N) into one run, as if it had run unsharded.",
        discussion: """
            Each shard database is read on its own read-only connection; the merged run is written to OUT in one \
            transaction, next to whatever OUT already holds. Its summaries (dla, eval) and estimator errors (patch) are \
            recomputed from all rows, not averaged over shards (edges: the means over prompts too). Shards that \
            do not belong together (another model, prompt set, result options or lnlens version, a missing or \
            repeated shard, a shard not completed) are refused. Merging the same shards again writes nothing. A \
            database holding several sharded runs (one per --model) gives one merged run per model.
            """)

    @Argument(help: "The database to write the merged run(s) into (created if missing).") var output: String
    @Argument(help: "The shard databases, one per shard (any number, any order).") var shards: [String] = []
    @Option(name: .customLong("run"), help: "In a shard database that holds a run with this id, merge only that run (repeat for several); for a database that holds one shard completed twice.")
    var runIDs: [Int64] = []

    func validate() throws {
        if shards.isEmpty { throw ValidationError("give the shard databases after OUT: lnlens merge OUT.sqlite SHARD.sqlite…") }
        if let bad = runIDs.first(where: { $0 < 1 }) { throw ValidationError("--run \(bad): give a run id (1, 2, …; see lnlens runs)") }
    }

    func run() throws {
        let merged = try MergeJob(outputPath: output, shardPaths: shards, runIDs: Set(runIDs)).run()
        for m in merged {
            let r = m.record
            let eval = r.command == StoreName.evalCommand
            // An eval run's model path lists its models as given.
            let model = eval ? r.modelPath : "\(ModelPath.shortName(r.modelPath)) (\(r.lnMode))"
            switch m.outcome {
            case .created(let id):
                print("merged \(m.shards) shards of \(r.command) \(model) into run \(id) of \(output): \(r.nPrompts) \(eval ? "windows" : "prompts")")
            case .alreadyMerged(let id):
                print("already merged: run \(id) of \(output) holds these \(m.shards) shards of \(r.command) \(model); nothing written")
            }
            if let nmae = m.summaries.first(where: { $0.scope == StoreName.scopeHeads && $0.key == "all" && $0.metric == StoreName.nmae }) {
                print("  DLA vs exact direct effect, NMAE over heads (all prompts): \(nmaeText(nmae.value)) %")
            }
            for loss in m.summaries where loss.scope == StoreName.scopeEval && loss.metric == StoreName.loss {
                print("  \(loss.key): loss " + String(format: "%.4f", loss.value) + " (all windows)")
            }
        }
        let ids = merged.map { String($0.outcome.runID) }
        let command = merged.first?.record.command
        let next = command == StoreName.evalCommand ? "lnlens report \(ids.joined(separator: " ")) --db \(output) --out report.html"
            : ids.count == 2 ? "lnlens diff \(ids[0]) \(ids[1]) --db \(output)"
            : command == StoreName.patchCommand ? "lnlens report \(ids[0]) --db \(output) --out report.html"
            : "lnlens query top-heads \(ids[0]) --db \(output)"
        print("read with: lnlens runs --db \(output); \(next)")
    }
}
