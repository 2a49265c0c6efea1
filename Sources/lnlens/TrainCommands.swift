import ArgumentParser
import Distributed
import Foundation
import GPT2
import Jobs
import ResultsStore
import Support
import TensorCore
import Tokenizer
import Training

/// Options `train` and `remove-ln` share: the text, the batch, the optimizer, checkpoints, output.
struct TrainingFlags: ParsableArguments {
    @Option(help: "Training text: UTF-8, documents separated by lines <|endoftext|> (e.g. corpus/train.txt); or give --tokens or --dataset.")
    var corpus: String?
    @OptionGroup var data: TokenDataFlags
    @Option(help: "Folder to write: the trained model (a Hugging Face folder) and, while training, checkpoints/.")
    var out: String?
    @Option(help: "Tokens per sequence, at most the model's n_positions (train: 128; remove-ln: the recipe's).") var seqLen: Int?
    @Option(help: "Tokens per optimizer step; sequences per step = this / --seq-len (train: 16384; remove-ln: the recipe's).")
    var batchTokens: Int?
    @Option(help: "Sequences per forward/backward pass (gradients are accumulated over a step's passes).")
    var microBatch = TrainingRecipe.microBatch
    @Option(name: [.customLong("schedule-steps"), .customLong("steps")],
            help: "Steps of the learning-rate schedule, its horizon: the cosine reaches --min-lr there (train: 1000; remove-ln: the recipe's).")
    var steps: Int?
    @Option(help: "Stop after N steps, keeping the learning rates of the whole schedule (default: at the schedule's end).")
    var stopAt: Int?
    @Option(help: "Peak learning rate after warm-up (train: 6e-4; remove-ln: the recipe's).") var lr: Double?
    @Option(help: "Learning-rate floor the cosine decays to (train: lr/10; remove-ln: the recipe's).") var minLr: Double?
    @Option(help: "Warm-up steps, linear from 0 (train: min(100, steps/10); remove-ln: the recipe's).") var warmup: Int?
    @Option(help: "AdamW weight decay, on embeddings and matrices (train: 0.01; remove-ln: the recipe's).") var weightDecay: Double?
    @Option(help: "Clip the global gradient norm to this.") var maxGradNorm = TrainingRecipe.maxGradNorm
    @Option(help: "Seed of the initial weights (--init), of the order the corpus's sequences are read in and of the dropout masks.")
    var seed: UInt64 = 0
    @Option(help: "Dropout probability at GPT-2's three sites in the training passes (inverted, as transformers' train mode): on wte + wpe, on the attention pattern, on the attention and MLP outputs (train: 0; remove-ln: the model's config.json, 0.1 for GPT-2). Never in evaluation.")
    var dropout: Double?
    @Option(help: "Dropout on wte + wpe (embd_pdrop), overriding --dropout.") var embdPdrop: Double?
    @Option(help: "Dropout on the attention pattern after the softmax (attn_pdrop), overriding --dropout.") var attnPdrop: Double?
    @Option(help: "Dropout on the attention's and the MLP's outputs (resid_pdrop), overriding --dropout.") var residPdrop: Double?
    @Option(name: [.customLong("save-every"), .customLong("checkpoint-every")],
            help: "Write a checkpoint every N steps (and at the end, and on Ctrl-C).")
    var checkpointEvery = 50
    @Flag(help: "Keep every checkpoint (exportable with lnlens export OUT --step N; older ones without AdamW's moments).")
    var keepAll = false
    @Flag(help: "Continue the interrupted training whose checkpoints are in --out (same options).") var resume = false
    @Flag(help: "With --resume: take the stored run over even if its writer on another host was heard from in the last 2 minutes.")
    var forceResume = false
    @Flag(help: "Replace --out if it exists.") var force = false
    @Flag(help: "Keep the newest checkpoint in --out/checkpoints/ after training ends (deleted by default).") var keepCheckpoints = false
    @Option(help: ArgumentHelp("Storage precision of the written model: f32 or f16.", valueName: "dtype")) var dtype = "f32"
    @Option(help: "Print a line every N steps (and at every LayerNorm removal).") var logEvery = 10
    @Option(help: "SQLite database to store the run (one row per step) in.") var db = "results/lnlens.sqlite"
    @Option(help: ArgumentHelp("Over MPI, how the ranks sum their gradients: whole (one MPI_Allreduce after the step's passes) or buckets (one MPI_Iallreduce per block during the last backward; docs/bench.md).", valueName: "whole|buckets"))
    var allreduce = AllreduceMode.whole

    func validate() throws {
        _ = try source
        guard CheckpointExport.Precision(rawValue: dtype) != nil else { throw ValidationError("--dtype \(dtype): use f32 or f16") }
        if forceResume && !resume { throw ValidationError("--force-resume goes with --resume") }
        if resume && force { throw ValidationError("--resume continues the training in --out; --force would replace it: give one") }
        for (name, value) in [("--seq-len", seqLen), ("--batch-tokens", batchTokens), ("--micro-batch", microBatch),
                              ("--save-every", checkpointEvery), ("--log-every", logEvery), ("--schedule-steps", steps),
                              ("--stop-at", stopAt)] {
            if let value, value < 1 { throw ValidationError("\(name) must be at least 1") }
        }
        if let steps, let stopAt, stopAt > steps {
            throw ValidationError("--stop-at \(stopAt) is after the schedule's end (--schedule-steps \(steps)); stop at most there")
        }
        if let warmup, warmup < 0 { throw ValidationError("--warmup must be 0 or more") }
        for (name, value) in [("--lr", lr), ("--min-lr", minLr)] {
            if let value, !(value >= 0 && value.isFinite) { throw ValidationError("\(name) must be a finite number ≥ 0") }
        }
        if let lr, lr > 1 { throw ValidationError("--lr \(lr) is above 1: AdamW diverges at once; GPT-2 fine-tuning uses about 6e-4") }
        if let weightDecay, !(weightDecay >= 0 && weightDecay <= 1) {
            throw ValidationError("--weight-decay \(weightDecay) must be in [0, 1] (decoupled decay shrinks each weight by lr · decay per step; 0.01 is usual)")
        }
        if !(maxGradNorm > 0 && maxGradNorm.isFinite) { throw ValidationError("--max-grad-norm must be a positive number") }
        for (name, value) in [("--dropout", dropout), ("--embd-pdrop", embdPdrop), ("--attn-pdrop", attnPdrop), ("--resid-pdrop", residPdrop)] {
            if let value, !(value >= 0 && value < 1) {
                throw ValidationError("\(name) \(value) must be in [0, 1) (the probability an element is zeroed; GPT-2 was trained with 0.1)")
            }
        }
    }

    /// The dropout probabilities: `command`'s default (train: none; remove-ln: the model's
    /// config.json), all three replaced by --dropout, each by its own option.
    func dropoutRates(default rates: DropoutRates) -> DropoutRates {
        var d = dropout.map { DropoutRates(embd: $0, attn: $0, resid: $0) } ?? rates
        (d.embd, d.attn, d.resid) = (embdPdrop ?? d.embd, attnPdrop ?? d.attn, residPdrop ?? d.resid)
        return d
    }

    /// The batch: the sequence length and tokens per step given, else `seqLen` and
    /// `batchTokens` (the command's recipe's), checked against each other.
    func batch(seqLen recipeSeqLen: Int, batchTokens recipeTokens: Int) throws -> (seqLen: Int, batchTokens: Int) {
        let seqLen = self.seqLen ?? recipeSeqLen, batchTokens = self.batchTokens ?? recipeTokens
        func given(_ value: Int?, _ name: String) -> String { value == nil ? "the recipe's \(name)" : name }
        if batchTokens < seqLen {
            throw CLIError.usage("\(given(self.batchTokens, "--batch-tokens")) \(batchTokens) is less than one sequence (\(given(self.seqLen, "--seq-len")) \(seqLen))")
        }
        if batchTokens % seqLen != 0 {
            throw CLIError.usage("\(given(self.batchTokens, "--batch-tokens")) \(batchTokens) is not a multiple of \(given(self.seqLen, "--seq-len")) \(seqLen); use --batch-tokens \(batchTokens / seqLen * seqLen)")
        }
        return (seqLen, batchTokens)
    }

    /// The output folder, which every command that trains needs.
    func requireOut() throws -> String {
        guard let out else { throw ValidationError("give --out DIR, the folder to write the trained model (and checkpoints/) to") }
        return out
    }

    var outURL: URL { URL(fileURLWithPath: out ?? ".").standardizedFileURL }

    /// Prepares --out (`TrainJob.prepareOutput`); the database is an input too.
    func prepareOut(inputs: [String]) throws {
        guard Communicator.world.isRoot else { return }  // rank 0 alone writes (README, Scale-out)
        try TrainJob.prepareOutput(try requireOut(), inputs: inputs + [db], force: force, resume: resume)
    }

    /// The bytes training `model` needs beyond its loaded parameters: gradients, AdamW's two
    /// moments and one micro-batch's forward and backward.
    func memoryNeeded(_ model: GPT2Model, seqLen: Int, attentionDropout: Bool = false) -> Int {
        let parameters = model.parameters.table.count * MemoryLayout<Float>.stride
        return 3 * parameters + ForwardPass.footprint(B: microBatch, T: seqLen, config: model.config, backward: true,
                                                      attentionDropout: attentionDropout)
    }

    /// Refuses, before the corpus is read, a training whose gradients, AdamW moments and one
    /// micro-batch's forward and backward would not fit in the memory the machine has.
    func checkMemory(_ model: GPT2Model, seqLen: Int, attentionDropout: Bool = false) throws {
        try MemoryBudget.check(bytes: memoryNeeded(model, seqLen: seqLen, attentionDropout: attentionDropout))
    }

    /// The data: --corpus (a shipped name resolved), --tokens or --dataset.
    var source: CorpusSource {
        get throws { try data.source(text: corpus.map(CorpusFiles.resolve), textOption: "--corpus") }
    }

    /// The data's tokens for a model with `vocabSize` ids (a dataset cut into --seq-len windows),
    /// a line printed on how a dataset was cut.
    func loadCorpus(tokenizer: GPT2Tokenizer, vocabSize: Int, window: Int) throws -> TokenCorpus {
        let corpus = try source.load(tokenizer: tokenizer, vocabSize: vocabSize, window: window)
        if let line = TokenDataFlags.describe(corpus) { print(line) }
        return corpus
    }

    func settings(_ recipe: TrainingRecipe, batch: (seqLen: Int, batchTokens: Int), weightDecay: Double,
                  auxWeight: Double) -> TrainingSettings {
        recipe.settings(seqLen: batch.seqLen, batchTokens: batch.batchTokens, microBatch: microBatch, seed: seed,
                        weightDecay: weightDecay, maxGradNorm: maxGradNorm, auxWeight: auxWeight)
    }

    /// The options as stored with the run: the batch and optimizer values of `settings`, the
    /// learning rates and steps of `recipe`.
    func options(_ recipe: TrainingRecipe, _ settings: TrainingSettings) -> TrainOptions {
        var o = TrainOptions()
        (o.computation.corpus, o.computation.seqLen, o.computation.batchTokens) = (corpus, settings.seqLen, settings.tokensPerStep)
        (o.computation.microBatch, o.computation.weightDecay) = (microBatch, settings.adamW.weightDecay)
        (o.computation.maxGradNorm, o.computation.seed, o.computation.dtype) = (maxGradNorm, seed, dtype)
        (o.computation.lr, o.computation.minLr, o.computation.warmup) = (recipe.lr, recipe.minLr, recipe.warmup)
        (o.computation.steps, o.computation.stopAt) = (recipe.steps, recipe.stopAt)
        (o.computation.tokens, o.computation.tokenDtype) = (data.tokens, data.tokenDtype)
        (o.computation.dataset, o.computation.field) = (data.dataset, data.dataset == nil ? nil : data.fieldName)
        (o.record.out, o.record.checkpointEvery, o.record.db) = (out, checkpointEvery, db)
        o.record.keepAll = keepAll ? true : nil
        func stored(_ p: Double) -> Double? { p == 0 ? nil : p }
        let d = settings.dropout
        (o.computation.embdPdrop, o.computation.attnPdrop, o.computation.residPdrop) = (stored(d.embd), stored(d.attn), stored(d.resid))
        return o
    }

    /// `job` with the checkpoint flags and the tokenizer its checkpoints carry.
    func configure(_ job: inout TrainJob, tokenizer: URL) {
        (job.keepCheckpoints, job.keepAll, job.forceResume, job.tokenizerDirectory) = (keepCheckpoints, keepAll, forceResume, tokenizer)
    }

    /// Runs `job` (rank 0: with the progress line and a log line every --log-every steps, then
    /// where the model and the run are) or follows it (other ranks), after every rank has checked
    /// that all have the same options, weights and data and rank 0 has prepared --out (`inputs`:
    /// the files --out must not be or hold) and `banner` is printed: a refused start writes nothing.
    func execute(_ job: TrainJob, label: String, inputs: [String], banner: String) throws {
        try job.checkSameOnEveryRank()
        try prepareOut(inputs: inputs)
        print(banner)
        guard job.trainer.communicator.isRoot else { return try job.follow(resume: resume) }
        let database = try ResultsDatabase(path: db)
        let total = job.trainer.settings.steps
        let progress = ProgressLine(label: label, unit: "steps")
        Interrupt.install()
        defer { progress.finish() }
        let id = try job.run(db: database, resume: resume) { r in
            let rate = r.seconds > 0 ? Double(job.trainer.settings.tokensPerStep) / r.seconds : 0
            let aux = r.auxLoss.map { String(format: " aux %.5f", $0) } ?? ""
            let detail = String(format: "loss %.4f%@ lr %.2e |g| %.3f %.0f tok/s", r.loss, aux, r.learningRate, r.gradNorm, rate)
            progress.update(done: r.step + 1, total: total, detail: detail)
            if (r.step + 1) % logEvery == 0 || !r.removals.isEmpty || r.step + 1 == total {
                let events = r.removals.isEmpty ? "" : "  [" + r.removals.map(\.event).joined(separator: "; ") + "]"
                progress.finish()
                print("step \(r.step + 1)/\(total)  \(detail)\(events)")
                fflush(nil)  // reach a log file (nohup, Slurm) now, not when the buffer fills
            }
            if Interrupt.requested { throw JobStop() }
        }
        print("wrote \(out ?? ""); stored in \(db) as run \(id)")
        let world = job.trainer.communicator
        if world.size > 1 {
            print(String(format: "%d ranks; rank 0 spent %.3f s in MPI_Allreduce (gradients %@ floats per step)", world.size,
                         world.allreduceSeconds, job.trainer.gradients.table.count.formatted()))
        }
    }
}

/// The shipped text files: a path that does not exist where the command runs is looked up in
/// `Resources.home`, a bare name in its `corpus/` (`--text heldout` is `corpus/heldout.txt`).
enum CorpusFiles {
    static func resolve(_ spec: String) -> String { ShippedFiles.resolve(spec, folder: Resources.corpus, ext: "txt") }
}

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a GPT-2 on a text corpus (AdamW, cosine learning rate with warm-up and floor), checkpointed and resumable.",
        discussion: """
            From scratch with --init CONFIG.json (transformers' initialisation, seeded) or continuing \
            --from MODEL. The corpus is tokenized with the model's tokenizer, <|endoftext|> after each \
            document, cut into --seq-len blocks read in a seeded order (--tokens: a nanoGPT .bin or an .npy \
            of ids, cut the same way; --dataset: JSON Lines documents, each cut into windows that never \
            cross documents). Each step: forward and backward \
            over --batch-tokens tokens in --micro-batch passes, global gradient clipping, one AdamW step \
            (β 0.9/0.999, ε 1e-8, decay on embeddings and matrices). Deterministic for a seed and thread \
            count. Every step's loss, learning rate and gradient norm is stored (a train run); \
            checkpoints go to --out/checkpoints/ and --resume continues from the newest with identical \
            parameters afterwards. The result is a Hugging Face folder that transformers loads.
            """)

    @Option(name: .customLong("init"), help: "config.json of a new model (trained from random weights).") var initConfig: String?
    @Option(help: "Model folder or name to continue training.") var from: String?
    @Option(help: "Tokenizer folder for --init (default: the embedded GPT-2 tokenizer).") var tokenizer: String?
    @OptionGroup var flags: TrainingFlags

    func validate() throws {
        if (initConfig == nil) == (from == nil) { throw ValidationError("give one of --init CONFIG.json (a new model) or --from MODEL") }
        _ = try flags.requireOut()
        if let minLr = flags.minLr, let lr = flags.lr, minLr > lr { throw ValidationError("--min-lr \(minLr) is above --lr \(lr)") }
    }

    func run() throws {
        var model: GPT2Model
        var modelPath: String, modelHash: String
        var tokenizerDir: URL
        var inputs = [try flags.source.url.path]
        if let initConfig {
            let url = URL(fileURLWithPath: initConfig)
            let (config, range) = try InitConfig.load(url)
            model = try Initialization.gpt2(config: config, seed: flags.seed, std: range)
            modelPath = url.path
            modelHash = "init:" + (try Files.read(url).withUnsafeBytes { XXH64.hex(XXH64.hash($0, seed: flags.seed)) })
            tokenizerDir = tokenizer.map { URL(fileURLWithPath: $0) } ?? Resources.models.appendingPathComponent("tokenizer")
            inputs.append(url.path)
        } else {
            let loaded = try LoadedModel.load(from, processing: .none)
            model = loaded.model
            modelPath = loaded.checkpoint.directory.path
            modelHash = try loaded.weightsHash()
            guard let dir = loaded.checkpoint.tokenizerDirectory else { throw CLIError.noTokenizer(modelPath) }
            tokenizerDir = dir
            inputs.append(modelPath)
        }
        let tok = try GPT2Tokenizer.load(directory: tokenizerDir)
        guard tok.vocabSize <= model.config.dVocab else {
            throw TrainingError.vocabularyMismatch(model: modelPath, dVocab: model.config.dVocab, other: tokenizerDir.path,
                                                   otherVocab: tok.vocabSize)
        }
        let batch = try flags.batch(seqLen: TrainingRecipe.seqLen, batchTokens: TrainingRecipe.batchTokens)
        let dropout = flags.dropoutRates(default: .none)
        try flags.checkMemory(model, seqLen: batch.seqLen, attentionDropout: dropout.attn > 0)
        let corpus = try flags.loadCorpus(tokenizer: tok, vocabSize: model.config.dVocab, window: batch.seqLen)
        let recipe = TrainingRecipe.train(steps: flags.steps, lr: flags.lr, minLr: flags.minLr, warmup: flags.warmup, stopAt: flags.stopAt)
        var settings = flags.settings(recipe, batch: batch, weightDecay: flags.weightDecay ?? TrainingRecipe.weightDecay, auxWeight: 0)
        settings.dropout = dropout
        let trainer = try Trainer(model: model, corpus: corpus, settings: settings, layerNorms: nil, communicator: .world)
        trainer.allreduce = flags.allreduce
        let out = flags.outURL, precision = CheckpointExport.Precision(rawValue: flags.dtype)!
        let metadata = ["lnlens_version": LNLensVersion.string, "lnlens_command": "train", "source": modelPath,
                        "corpus": corpus.path, "corpus_tokens_xxh64": corpus.hash]
        var options = flags.options(recipe, settings)
        (options.record.initConfig, options.record.from) = (initConfig ?? "", from ?? "")
        var job = TrainJob(trainer: trainer, command: StoreName.trainCommand, modelPath: modelPath, modelHash: modelHash,
                           options: options,
                           toolVersion: LNLensVersion.string, out: out, checkpointEvery: flags.checkpointEvery) { t in
            try CheckpointExport.write(t.model.parameters, config: t.model.config, into: out, tokenizerFrom: tokenizerDir,
                                       precision: precision, metadata: metadata)
        }
        flags.configure(&job, tokenizer: tokenizerDir)
        let banner = "training \(model.config.parameterCount.formatted()) parameters on \(corpus.tokenCount.formatted()) tokens "
            + "(\(corpus.documents) documents, \(corpus.blockCount(seqLen: settings.seqLen)) sequences of \(settings.seqLen)); "
            + "\(settings.steps) steps of \(settings.tokensPerStep) tokens"
            + (recipe.stopAt == nil ? "" : " (stopping early; the learning rates of a \(recipe.steps)-step schedule)")
        try flags.execute(job, label: "train", inputs: inputs + [tokenizerDir.path], banner: banner)
    }
}

extension RemovalRecipe.Name: ExpressibleByArgument {}
extension SigmaUpdate: ExpressibleByArgument {}
extension AllreduceMode: ExpressibleByArgument {}

/// `remove-ln --aux-target`: the positions whose mean σ the auxiliary loss pulls every position to.
enum AuxTarget: String, CaseIterable, ExpressibleByArgument {
    /// Every position but 0 and `<|endoftext|>` inputs (the companion's `CustomTrainer`).
    case content
    case all
}

struct RemoveLNCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove-ln",
        abstract: "Remove every LayerNorm by fine-tuning, as Baroni et al. 2025 do; writes the LN-free model.",
        discussion: """
            Each LayerNorm becomes FakeLN — (x − mean x)/σ · w + b with σ frozen — on a schedule: block \
            i's ln_2 at ln2-start + ln2-gap·i, then ln_1 for Q/K, then ln_1 for V, then ln_f (gpt2: \
            20+2i, 44+2i, 68+3i, 104). σ is a moving average of the per-token sqrt(var + 1e-5), updated \
            after every micro-batch forward as the companion code does (--sigma-update), frozen when \
            that LayerNorm goes. The loss adds aux-weight · mean((σ_t − σ̄)²) at ln_f's input, σ̄ the \
            mean over positions other than 0 and <|endoftext|> (--aux-target); predictions of \
            <|endoftext|> leave the loss and the LayerNorm weights are decayed, as in the companion's \
            fine-tune (--no-mask-eot-targets, --no-decay-ln-weights). Dropout is applied in the training \
            passes as the companion's train mode does, at the model's config.json probabilities (0.1 \
            for GPT-2, 0 for the embedded tiny models; --dropout, --embd-pdrop, --attn-pdrop, \
            --resid-pdrop), never in evaluation. \
            --recipe sets every number: gpt2, gpt2-medium, gpt2-large and gpt2-xl are the paper's runs \
            (the companion's config.py gpt2_aux, gpt2-medium_fasttune_aux, gpt2-large_aux, \
            gpt2-xl_aux) for 12, 24, 36 and 48 layers, and --scaled moves one to another depth by the \
            scaling rule (the same starts, per-block gaps and steps after ln_f); quick, the default, is \
            gpt2's schedule at any depth on a CPU-sized batch (128-token sequences, 16,384 tokens per \
            step, 20 warm-up steps). An option given overrides the recipe. --plan prints the whole run \
            without training. The output is in the released LN-free encoding (layer_norm_epsilon 1e12, \
            LN weights × 1e6/σ), which lnlens loads as ln-free and transformers loads as is. --keep-ln \
            runs the same fine-tuning with nothing removed (the paper's vanilla control).
            """)

    @Argument(help: "The model to remove LayerNorm from (folder or name).") var model: String
    @Option(help: "The recipe that sets every number of the run: quick (any depth) or one of the paper's runs.")
    var recipe: RemovalRecipe.Name = .quick
    @Flag(help: "Apply --recipe to a model of another depth by the scaling rule (the same starts, per-block gaps and steps after ln_f).")
    var scaled = false
    @Flag(help: "Fine-tune identically but remove nothing (the vanilla control).") var keepLn = false
    @Option(help: "Weight of the auxiliary loss on σ's spread at ln_f's input (the recipe's: 0.1; large 0.03, xl 0.01).")
    var auxWeight: Double?
    @Option(help: "Momentum of σ's moving average per forward of the recipe's micro-batch (the recipe's: 0.9 per 32 sequences; large 0.9^(28/32) per 28, xl 0.9^(18/32) per 18).")
    var momentum: Double?
    @Option(help: "When σ takes a measurement: micro-batch (after every micro-batch forward, momentum^(micro-batch / the recipe's sequences) per update, cubed for ln_1's three calls, as the companion) or step (once per optimizer step, --momentum as is).")
    var sigmaUpdate: SigmaUpdate = .microBatch
    @Flag(inversion: .prefixedNo, help: "Leave predictions of <|endoftext|> out of the loss, as the companion's collator (pad = EOS) does.")
    var maskEotTargets = true
    @Option(help: "The aux loss's target σ̄: content (mean over positions other than 0 and <|endoftext|> inputs, the companion's) or all.")
    var auxTarget: AuxTarget = .content
    @Flag(inversion: .prefixedNo, help: "Weight decay on the LayerNorm weights too, as the companion's Trainer does to its FakeLayerNorm modules (default: on, off with --keep-ln).")
    var decayLnWeights: Bool?
    @Option(help: "Step at which block 0's ln_2 is removed (0-based: steps already taken, as the paper's code counts; the log's step N is step N−1 here).")
    var ln2Start: Int?
    @Option(help: "Steps between blocks for ln_2 (0: all blocks at once).") var ln2Gap: Int?
    @Option(help: "Step of block 0's ln_1 Q/K path (default: ln2-start + layers · ln2-gap).") var ln1qkStart: Int?
    @Option(help: "Steps between blocks for ln_1 Q/K.") var ln1qkGap: Int?
    @Option(help: "Step of block 0's ln_1 V path (default: ln1qk-start + layers · ln1qk-gap).") var ln1vStart: Int?
    @Option(help: "Steps between blocks for ln_1 V.") var ln1vGap: Int?
    @Option(help: "Step of ln_f (default: ln1v-start + layers · ln1v-gap).") var lnfStep: Int?
    @Flag(help: "Print the whole run (removal steps, learning rates, tokens, memory, time from one measured pass) and exit without training.")
    var plan = false
    @Flag(help: "With --plan: print the plan as JSON, the learning rate of every step included.") var json = false
    @OptionGroup var flags: TrainingFlags

    func validate() throws {
        for (name, value) in [("--ln2-start", ln2Start), ("--ln2-gap", ln2Gap), ("--ln1qk-gap", ln1qkGap), ("--ln1v-gap", ln1vGap),
                              ("--ln1qk-start", ln1qkStart), ("--ln1v-start", ln1vStart), ("--lnf-step", lnfStep)] {
            if let value, value < 0 { throw ValidationError("\(name) must be 0 or more") }
        }
        if let auxWeight, !(auxWeight >= 0 && auxWeight.isFinite) { throw ValidationError("--aux-weight must be a finite number ≥ 0") }
        if let momentum, !(momentum >= 0 && momentum < 1) { throw ValidationError("--momentum must be in [0, 1)") }
        if json && !plan { throw ValidationError("--json goes with --plan") }
        if !plan { _ = try flags.requireOut() }
    }

    /// The recipe for a model of `nLayers` layers (`model` in errors), each option given
    /// replacing the recipe's value.
    func resolvedRecipe(_ model: String, nLayers: Int) throws -> RemovalRecipe {
        var r: RemovalRecipe
        do {
            r = try RemovalRecipe.named(recipe).forModel(model, nLayers: nLayers, scaled: scaled)
        } catch { throw CLIError.usage(error.errorDescription ?? "\(error)") }
        (r.givenScheduleSteps, r.stopAt, r.warmup) = (flags.steps, flags.stopAt ?? r.stopAt, flags.warmup ?? r.warmup)
        (r.lr, r.minLr, r.weightDecay) = (flags.lr ?? r.lr, flags.minLr ?? r.minLr, flags.weightDecay ?? r.weightDecay)
        (r.auxWeight, r.momentum) = (auxWeight ?? r.auxWeight, momentum ?? r.momentum)
        (r.ln2Start, r.ln2Gap, r.ln1QKGap, r.ln1VGap) = (ln2Start ?? r.ln2Start, ln2Gap ?? r.ln2Gap, ln1qkGap ?? r.ln1QKGap, ln1vGap ?? r.ln1VGap)
        (r.ln1QKStart, r.ln1VStart, r.lnFinalStep) = (ln1qkStart ?? r.ln1QKStart, ln1vStart ?? r.ln1VStart, lnfStep ?? r.lnFinalStep)
        if r.minLr > r.lr {
            let floor = flags.minLr == nil ? "--recipe \(recipe.rawValue)'s min lr" : "--min-lr", peak = flags.lr == nil ? "--recipe \(recipe.rawValue)'s lr" : "--lr"
            throw CLIError.usage("\(floor) \(r.minLr) is above \(peak) \(r.lr); give --min-lr at most the peak learning rate")
        }
        let batch = try flags.batch(seqLen: r.seqLen, batchTokens: r.tokensPerStep)
        (r.seqLen, r.sequencesPerStep) = (batch.seqLen, batch.batchTokens / batch.seqLen)
        return r
    }

    func run() throws {
        let loaded = try LoadedModel.load(model, processing: .none)
        let source = loaded.checkpoint.directory.path
        guard loaded.model.lnMode == .layerNorm else {
            throw CLIError.usage("\(source) is already LN-free (layer_norm_epsilon \(loaded.model.config.layerNormEpsilon)); remove-ln needs a model with LayerNorm")
        }
        guard let tokenizerDir = loaded.checkpoint.tokenizerDirectory else { throw CLIError.noTokenizer(source) }
        let tok = try GPT2Tokenizer.load(directory: tokenizerDir)
        let r = try resolvedRecipe(source, nLayers: loaded.model.config.nLayers)
        var (settings, layerNorms) = removalSettings(r)
        settings.dropout = try Self.dropout(flags, configIn: loaded.checkpoint.directory)
        if plan { return try printPlan(loaded.model, recipe: r, settings: settings, layerNorms: layerNorms, tokenizer: tok) }
        try flags.checkMemory(loaded.model, seqLen: settings.seqLen, attentionDropout: settings.dropout.attn > 0)
        let corpus = try flags.loadCorpus(tokenizer: tok, vocabSize: loaded.model.config.dVocab, window: settings.seqLen)
        let trainer = try Trainer(model: loaded.model, corpus: corpus, settings: settings, layerNorms: layerNorms, communicator: .world)
        trainer.allreduce = flags.allreduce
        var options = flags.options(r.training, settings)
        options.recordRemoval(r, model: model, keepLN: keepLn, settings: settings, layerNorms: layerNorms)
        var job = TrainJob(trainer: trainer, command: StoreName.removeLNCommand, modelPath: source,
                           modelHash: try loaded.weightsHash(), options: options,
                           toolVersion: LNLensVersion.string, out: flags.outURL, checkpointEvery: flags.checkpointEvery,
                           export: exporter(source: source, corpus: corpus, tokenizer: tokenizerDir))
        flags.configure(&job, tokenizer: tokenizerDir)
        let what = keepLn ? "fine-tuning with LayerNorm kept (--keep-ln)" : "removing \(r.schedule.events.count) LayerNorm paths by step \(r.schedule.lastStep)"
        let stop = settings.steps < r.scheduleSteps ? " (stopping at \(settings.steps) of a \(r.scheduleSteps)-step schedule)" : ""
        let banner = "\(what), recipe \(recipe.rawValue): \(settings.steps) steps\(stop) of \(settings.tokensPerStep) tokens on \(corpus.tokenCount.formatted()) tokens of \(corpus.path)"
        try flags.execute(job, label: keepLn ? "keep-ln" : "remove-ln", inputs: [source, corpus.path, tokenizerDir.path], banner: banner)
    }

    /// The trainer's settings and LayerNorm state for recipe `r` with the σ update and the
    /// companion's numerics as given.
    func removalSettings(_ r: RemovalRecipe) -> (TrainingSettings, FakeLayerNorms) {
        var s = flags.settings(r.training, batch: (r.seqLen, r.tokensPerStep), weightDecay: r.weightDecay, auxWeight: r.auxWeight)
        (s.maskEOTTargets, s.auxTargetSkipsBOSAndEOT) = (maskEotTargets, auxTarget == .content)
        s.adamW.decayLayerNormWeights = decayLnWeights ?? !keepLn
        let layerNorms = FakeLayerNorms(schedule: r.schedule, momentum: r.momentum, keepLN: keepLn, sigmaUpdate: sigmaUpdate,
                                        momentumSequences: r.momentumSequences)
        return (s, layerNorms)
    }

    /// The dropout: the model's config.json (`embd_pdrop`, `attn_pdrop`, `resid_pdrop`;
    /// transformers' 0.1 for a missing one), as the companion fine-tunes in train mode, with the
    /// options given applied; a value of the file that is not a probability is refused naming it.
    static func dropout(_ flags: TrainingFlags, configIn directory: URL) throws -> DropoutRates {
        let url = directory.appendingPathComponent("config.json")
        let fromFile: DropoutRates
        do { fromFile = try DropoutRates(configAt: url) } catch {
            throw CLIError.usage("\(url.path): embd_pdrop, attn_pdrop or resid_pdrop is not a number; fix the file or give --dropout P")
        }
        let d = flags.dropoutRates(default: fromFile)
        for (key, p) in [("embd_pdrop", d.embd), ("attn_pdrop", d.attn), ("resid_pdrop", d.resid)] where !(p >= 0 && p < 1) {
            throw CLIError.usage("\(url.path): \(key) \(p) is not in [0, 1); fix the file or give --\(key.replacingOccurrences(of: "_", with: "-")) P")
        }
        return d
    }

    /// Writes the trained model into --out: LN-free (or, with --keep-ln, as it is).
    func exporter(source: String, corpus: TokenCorpus, tokenizer: URL) -> (Trainer) throws -> Void {
        let out = flags.outURL, precision = CheckpointExport.Precision(rawValue: flags.dtype)!
        let metadata = ["lnlens_version": LNLensVersion.string, "lnlens_command": keepLn ? "remove-ln --keep-ln" : "remove-ln",
                        "source": source, "corpus": corpus.path, "corpus_tokens_xxh64": corpus.hash]
        return { t in
            let (weights, config) = try TrainingCheckpoint.exportable(t.model.parameters, config: t.model.config, layerNorms: t.layerNorms,
                                                                      stepsDone: t.step, checkpoint: out.path)
            try CheckpointExport.write(weights, config: config, into: out, tokenizerFrom: tokenizer, precision: precision, metadata: metadata)
        }
    }
}

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Mean next-token loss of models on a text, with 95% confidence intervals, side by side and stored.",
        discussion: """
            The text is tokenized with the first model's tokenizer (documents separated by lines \
            <|endoftext|>, each followed by that token) and cut into windows of --context tokens (or \
            --tokens FILE.bin|.npy, ids cut the same way; or --dataset FILE.jsonl, documents cut into \
            windows that never cross documents); each \
            window predicts its tokens 2…context. The interval is mean ± 1.96·sd/√windows over the \
            windows' losses. Each window's loss is stored per model, so that the runs of --shard I/N \
            (windows ≡ I mod N) combine with `lnlens merge` into the run of the whole text. The paper's \
            loss table is `lnlens eval ORIGINAL VANILLA LN-FREE --text …`.
            """)

    @Argument(help: "Models (folders or names); default: the embedded gpt2-tiny, gpt2-tiny-vanilla and gpt2-tiny-lnfree.")
    var models: [String] = []
    @Option(help: "Text to score: a .txt file, or the name of one in corpus/ (default heldout, corpus/heldout.txt); or give --tokens or --dataset.")
    var text: String?
    @OptionGroup var data: TokenDataFlags
    @Option(help: "Tokens per window (default: min(128, the model's n_positions)).") var context: Int?
    @Option(help: "Windows per forward pass (with 1, merged shards equal an unsharded run bit for bit).") var batch = 8
    @Option(help: "SQLite database to store the run in.") var db = "results/lnlens.sqlite"
    @Option(help: "Windows per stored chunk (each chunk is one transaction; an interrupted run loses at most one).")
    var chunkSize = 32
    @Option(help: "Continue the interrupted eval run with this id (same models, text and options).") var resume: Int64?
    @Flag(help: "With --resume: take the stored run over even if its writer on another host was heard from in the last 2 minutes.")
    var forceResume = false
    @OptionGroup var sharding: ShardOption
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        _ = try source
        if let context, context < 2 { throw ValidationError("--context must be at least 2") }
        if batch < 1 { throw ValidationError("--batch must be at least 1") }
        if chunkSize < 1 { throw ValidationError("--chunk-size must be at least 1") }
        if let resume, resume < 1 { throw ValidationError("--resume \(resume): give a run id (1, 2, …; see lnlens runs)") }
        if forceResume && resume == nil { throw ValidationError("--force-resume goes with --resume RUN_ID") }
        var seen = Set<String>()
        for model in models where !seen.insert(model).inserted {
            throw ValidationError("the model \(model) is given twice: give each model once (its losses are stored under its name)")
        }
    }

    /// The data: --text (default heldout; a shipped name resolved), --tokens or --dataset.
    var source: CorpusSource {
        get throws { try data.source(textOrHeldout: text) }
    }

    var specs: [String] {
        if !models.isEmpty { return models }
        let names = [EmbeddedModels.defaultName, "gpt2-tiny-vanilla", EmbeddedModels.lnFreeName]
        return names.filter { FileManager.default.fileExists(atPath: EmbeddedModels.resolve($0) + "/config.json") }
    }

    /// Each model as the job takes it, with its LN mode, and the first one's tokenizer.
    func loadModels() throws -> (entries: [EvalJob.Entry], modes: [String], tokenizer: GPT2Tokenizer) {
        var entries: [EvalJob.Entry] = [], modes: [String] = []
        var tokenizer: GPT2Tokenizer?
        for spec in specs {
            let loaded = try LoadedModel.load(spec, processing: .none)
            if let first = entries.first, first.model.config.dVocab != loaded.model.config.dVocab {
                throw TrainingError.vocabularyMismatch(model: first.name, dVocab: first.model.config.dVocab, other: spec,
                                                       otherVocab: loaded.model.config.dVocab)
            }
            if tokenizer == nil { tokenizer = try loaded.requireTokenizer() }
            entries.append(.init(name: spec, model: loaded.model, hash: try loaded.weightsHash()))
            modes.append(loaded.model.lnMode.rawValue)
        }
        return (entries, modes, tokenizer!)
    }

    func run() throws {
        let shard = try sharding.resolved()
        let (entries, modes, tok) = try loadModels()
        let window = context ?? min(128, entries.map(\.model.config.nCtx).min()!)
        let corpus = try source.load(tokenizer: tok, vocabSize: entries[0].model.config.dVocab, window: window)
        if !json, let line = TokenDataFlags.describe(corpus) { print(line) }
        // One pass of --batch windows (every logit kept), before any run is recorded.
        let passWindows = max(1, min(batch, corpus.blockCount(seqLen: window)))
        try MemoryBudget.check(bytes: entries.map { ForwardPass.footprint(B: passWindows, T: window, config: $0.model.config, backward: false) }.max()!)
        var options = EvalOptions()
        (options.record.models, options.record.lnModes) = (specs.joined(separator: ","), modes.joined(separator: ","))
        (options.record.db, options.record.shard) = (db, shard?.description)
        (options.record.tokens, options.record.dataset) = (data.tokens, data.dataset)
        options.record.text = data.tokens == nil && data.dataset == nil ? text ?? "heldout" : nil
        (options.computation.tokenDtype, options.computation.field) = (data.tokenDtype, data.dataset == nil ? nil : data.fieldName)
        var job = EvalJob(entries: entries, text: corpus, context: window, batch: batch, options: options,
                          toolVersion: LNLensVersion.string)
        (job.shard, job.chunkSize, job.forceResume, job.communicator) = (shard, chunkSize, forceResume, .world)
        try job.prepare()
        guard job.communicator.isRoot else { return try job.follow() }  // rank 0 alone stores (README, Scale-out)
        if let note = Self.rankNote(chunkSize: chunkSize, batch: batch, ranks: job.communicator.size) { printErr(note) }
        let database = try ResultsDatabase(path: db)
        let progress = ProgressLine(label: "eval", unit: "window scores")
        Interrupt.install()
        let (id, results): (Int64, [EvalResult])
        do {
            defer { progress.finish() }
            (id, results) = try job.run(db: database, resume: resume) { name, done, total in
                progress.update(done: done, total: total, detail: name)
                if Interrupt.requested { throw JobStop() }
            }
        }
        let rows = zip(zip(specs, modes), results).map { Row(model: $0.0.0, lnMode: $0.0.1, result: $0.1) }
        if json { return try printJSON(Output(runID: id, text: corpus.path, context: window, models: rows)) }
        let windows = corpus.blockCount(seqLen: window)
        print("\(corpus.path): \(corpus.tokenCount.formatted()) tokens, "
              + (shard.map { "shard \($0): \(results[0].windows) of \(windows) windows of \(window)" } ?? "\(windows) windows of \(window)"))
        Self.printTable(rows)
        if let shard {
            print("stored in \(db) as shard \(shard) (run \(id)); once all \(shard.count) shards are done, combine them with: lnlens merge OUT.sqlite SHARD.sqlite…")
        } else {
            print("stored in \(db) as run \(id)")
        }
    }

    /// Over MPI, when a chunk has fewer passes than there are ranks (some then wait): what to raise.
    static func rankNote(chunkSize: Int, batch: Int, ranks: Int) -> String? {
        let passes = (chunkSize + batch - 1) / batch
        guard ranks > 1, passes < ranks else { return nil }
        return "lnlens: note: a chunk of --chunk-size \(chunkSize) windows is \(passes) pass\(passes == 1 ? "" : "es") of --batch \(batch) for \(ranks) ranks, so \(ranks - passes) wait: use --chunk-size \(ranks * batch) or more to keep every rank busy"
    }

    /// One model's result, as `--json` prints it.
    struct Row: Encodable {
        let model: String, lnMode: String, loss: Double, ciLow: Double, ciHigh: Double, windows: Int, predictions: Int
        enum CodingKeys: String, CodingKey {
            case model, lnMode = "ln_mode", loss, ciLow = "ci_low", ciHigh = "ci_high", windows, predictions
        }
        init(model: String, lnMode: String, result r: EvalResult) {
            (self.model, self.lnMode) = (model, lnMode)
            (loss, ciLow, ciHigh, windows, predictions) = (r.loss, r.ciLow, r.ciHigh, r.windows, r.predictions)
        }
    }

    struct Output: Encodable {
        let runID: Int64, text: String, context: Int, models: [Row]
        enum CodingKeys: String, CodingKey { case runID = "run_id", text, context, models }
    }

    /// The loss table, and each model's difference from the first.
    static func printTable(_ rows: [Row]) {
        let width = max(5, rows.map(\.model.count).max()!)
        print("model".padding(toLength: width, withPad: " ", startingAt: 0) + "  ln mode     loss     95% CI")
        for r in rows {
            print(r.model.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + r.lnMode.padding(toLength: 10, withPad: " ", startingAt: 0)
                  + String(format: "  %.4f   [%.4f, %.4f]", r.loss, r.ciLow, r.ciHigh))
        }
        for r in rows.dropFirst() { print(String(format: "%@ − %@: %+.4f nats", r.model, rows[0].model, r.loss - rows[0].loss)) }
    }
}
