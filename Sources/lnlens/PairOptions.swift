import Analysis
import ArgumentParser
import Foundation

/// The inputs of the commands that run prompt pairs (clean and corrupt) through models and store
/// them run by run (`patch`, `edges`): the models, the prompt set, the store and its resume, the
/// chunk stored per transaction and the task check's `--min-gap`.
struct PairRunOptions: ParsableArguments {
    @Option(name: .customLong("model"), help: "Model folder or name; repeat for several (default: gpt2-tiny and gpt2-tiny-lnfree).")
    var models: [String] = []
    @Option(help: "Prompt set (JSONL with prompt, answer, wrong, corrupt), or a shipped set's name.") var prompts: String
    @Flag(inversion: .prefixedNo,
          help: "Put <|endoftext|> first in both prompts, as TransformerLens's to_tokens and the paper do (default; --no-prepend-bos: the prompts as they are).")
    var prependBos = true
    @Flag(help: "Skip and count invalid prompt lines instead of stopping at the first.") var skipInvalid = false
    @Option(help: "SQLite database to store the runs in.") var db = "results/lnlens.sqlite"
    @Option(help: "Continue an interrupted run (one --model, same prompts and options).") var resume: Int64?
    @Flag(help: "With --resume: take the run over even if its writer on another host was heard from in the last 2 minutes.")
    var forceResume = false
    @Option(help: "Prompts stored per transaction (the unit an interrupted run resumes from).") var chunkSize = 32
    @Option(help: ArgumentHelp("Prompts whose |metric(clean) − metric(corrupt)| is below this many logits are left out of the estimator errors (and patch's normalised grids) (0: keep all).",
                               valueName: "logits"))
    var minGap = TaskCheck.defaultMinGap

    func validate() throws {
        if resume != nil && models.count > 1 { throw ValidationError("--resume continues one run: give the one --model it used") }
        if forceResume && resume == nil { throw ValidationError("--force-resume goes with --resume RUN_ID") }
        if chunkSize < 1 { throw ValidationError("--chunk-size must be at least 1") }
        if !(minGap >= 0 && minGap.isFinite) { throw ValidationError("--min-gap \(minGap): give a number of logits ≥ 0, e.g. 0.5") }
    }

    /// The models run: those given, else the embedded pair (one model when resuming).
    var modelSpecs: [String] {
        models.isEmpty ? (resume == nil ? [EmbeddedModels.defaultName, EmbeddedModels.lnFreeName] : [EmbeddedModels.defaultName]) : models
    }

    /// The prompt pairs of `spec`'s model.
    func promptSet(for loaded: LoadedModel) throws -> PromptSet {
        try loadPromptSet(prompts, model: loaded, skipInvalid: skipInvalid, prependBOS: prependBos).requiringPairs(skipInvalid: skipInvalid)
    }
}
