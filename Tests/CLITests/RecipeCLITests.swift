import Foundation
import ResultsStore
import Testing
import Training

/// `remove-ln --recipe/--scaled/--plan`, `--schedule-steps` against `--stop-at`, `--save-every
/// --keep-all` and `export --step`, through the binary on the embedded gpt2-tiny (4 layers) with
/// the schedule compressed to ln_2 at 1…4, Q/K 5…8, V 9…12 and ln_f at 13.
@Suite struct RecipeCLITests {
    typealias C = CLITests
    static let compressed = ["--ln2-start", "1", "--ln2-gap", "1", "--ln1qk-gap", "1", "--ln1v-gap", "1", "--warmup", "1"]
    static let schedule = RemovalSchedule(nLayers: 4, ln2Start: 1, ln2Gap: 1, ln1QKGap: 1, ln1VGap: 1)
    /// The quick recipe's rates on a 20-step horizon with one warm-up step.
    static let rates = LearningRateSchedule(peak: 6e-4, floor: 3e-4, warmupSteps: 1, totalSteps: 20)

    static func json(_ stdout: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(stdout.utf8)) as? [String: Any])
    }

    /// The plan: removal steps equal the schedule, every step's rate that of the whole horizon,
    /// tokens = per step × steps run, a time measured; nothing written, no --out needed.
    @Test func planShowsTheRunWithoutTraining() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let db = dir.appendingPathComponent("p.sqlite").path
        let args = ["remove-ln", "gpt2-tiny"] + TrainCLITests.small + Self.compressed
            + ["--schedule-steps", "20", "--stop-at", "16", "--plan", "--db", db]
        let r = try C.run(args + ["--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let plan = try Self.json(r.stdout)
        let removals = try #require(plan["removals"] as? [[String: Any]])
        #expect(removals.map { $0["step"] as? Int } == Self.schedule.events.map(\.step))
        #expect(removals.map { $0["layer_norm"] as? String } == Self.schedule.events.map(\.path.name))
        #expect(plan["recipe"] as? String == "quick" && plan["steps_run"] as? Int == 16 && plan["schedule_steps"] as? Int == 20)
        #expect(plan["tokens_per_step"] as? Int == 64 && plan["tokens_total"] as? Int == 64 * 16)
        let lrs = try #require(plan["lr_per_step"] as? [Double])
        #expect(lrs.count == 16 && zip(lrs, (0..<16).map { Self.rates.rate(at: $0) }).allSatisfy { abs($0 - $1) <= 1e-15 })
        let time = try #require(plan["time"] as? [String: Any])
        #expect((time["total_seconds"] as? Double).map { $0 > 0 } == true && (time["basis"] as? String)?.contains("estimate") == true)
        #expect(!FileManager.default.fileExists(atPath: db))
        let text = try C.run(args)
        #expect(text.status == 0, "\(text.stderr)")
        #expect(text.stdout.contains("ln_f     step 13") && text.stdout.contains("an estimate from one forward and backward pass"),
                "\(text.stdout)")
        #expect(text.stdout.contains("16 of a 20-step schedule") && text.stdout.contains("1,024 in all"), "\(text.stdout)")
    }

    /// A published recipe on a model of another depth: refused, or with --scaled moved by the
    /// scaling rule (gpt2's start, gaps and 196 steps after ln_f).
    @Test func wrongDepthRecipe() throws {
        let base = ["remove-ln", "gpt2-tiny", "--recipe", "gpt2"] + TrainCLITests.small
        try C.expectOneLineError(base + ["--plan"], mentions: ["--recipe gpt2", "gpt2_aux", "12-layer", "has 4 layers", "--scaled"])
        try C.expectOneLineError(base + ["--json", "--out", "/tmp/x"], mentions: ["--json goes with --plan"])
        let r = try C.run(base + ["--scaled", "--plan", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let plan = try Self.json(r.stdout)
        let scaled = RemovalRecipe.named(.gpt2).scaled(to: 4)
        #expect(plan["schedule_steps"] as? Int == scaled.scheduleSteps && scaled.scheduleSteps == scaled.schedule.lnFinalStep + 196)
        #expect(plan["warmup"] as? Int == 25 && plan["companion_config"] as? String == "gpt2_aux" && plan["momentum_sequences"] as? Int == 32)
        #expect((plan["removals"] as? [[String: Any]])?.last?["step"] as? Int == scaled.schedule.lnFinalStep)
    }

    /// --stop-at ends at its step with the rates of the whole schedule; --save-every --keep-all
    /// keeps every checkpoint; export --step writes one (LN-free once ln_f is gone, the run's own
    /// model for the last step), refuses an earlier or missing step; a resume with another
    /// recipe is refused naming --recipe.
    @Test func stopAtKeepAllAndExportStep() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        let args = ["remove-ln", "gpt2-tiny"] + TrainCLITests.small + Self.compressed
            + ["--schedule-steps", "20", "--stop-at", "16", "--save-every", "5", "--keep-all", "--out", path("run"), "--db", path("r.sqlite")]
        let r = try C.run(args)
        #expect(r.status == 0, "\(r.stderr)")
        let steps = try ResultsDatabase.openReadOnly(path: path("r.sqlite")).trainSteps(runID: 1)
        #expect(steps.count == 16 && zip(steps.map(\.lr), (0..<16).map { Self.rates.rate(at: $0) }).allSatisfy { abs($0 - $1) <= 1e-12 })
        #expect(TrainingCheckpoint.kept(out: URL(fileURLWithPath: path("run"))) == [0, 5, 10, 15, 16])

        let e15 = try C.run(["export", path("run"), "--step", "15", "--out", path("e15")])
        #expect(e15.status == 0 && e15.stdout.contains("ln-free"), "\(e15.stdout) \(e15.stderr)")
        #expect(try C.run(["inspect", path("e15")]).stdout.contains("ln-free"))
        #expect(try C.run(["export", path("run"), "--step", "16", "--out", path("e16")]).status == 0)
        let eval = try C.run(["eval", path("run"), path("e16"), "--text", TrainCLITests.corpus, "--context", "16", "--db", path("e.sqlite"), "--json"])
        #expect(eval.status == 0, "\(eval.stderr)")
        let losses = try #require(try Self.json(eval.stdout)["models"] as? [[String: Any]]).map { $0["loss"] as? Double }
        #expect(losses.count == 2 && losses[0] != nil && losses[0] == losses[1], "\(losses)")
        try C.expectOneLineError(["export", path("run"), "--step", "10", "--out", path("e10")], mentions: ["after 10 steps", "still a real LayerNorm"])
        try C.expectOneLineError(["export", path("run"), "--step", "7", "--out", path("e7")],
                                 mentions: ["no checkpoint of step 7", "0, 5, 10, 15, 16", "--keep-all"])
        try C.expectOneLineError(args.filter { $0 != "--keep-all" } + ["--recipe", "gpt2", "--scaled", "--resume"],
                                 mentions: ["--recipe", "quick", "gpt2"])
        // Each of the companion's numerics is recorded and compared on --resume.
        let stored = try #require(try ResultsDatabase.openReadOnly(path: path("r.sqlite")).run(id: 1)).optionsJSON
        for (key, value) in [("sigma_update", "\"micro-batch\""), ("mask_eot_targets", "true"), ("aux_target", "\"content\""),
                             ("decay_ln_weights", "true")] {
            #expect(stored.contains("\"\(key)\":\(value)"), "\(key) in \(stored)")
        }
        for (option, words) in [(["--sigma-update", "step"], ["--sigma-update", "micro-batch", "step"]),
                                (["--no-mask-eot-targets"], ["--mask-eot-targets", "true", "false"]),
                                (["--aux-target", "all"], ["--aux-target", "content", "all"]),
                                (["--no-decay-ln-weights"], ["--decay-ln-weights", "true", "false"])] {
            try C.expectOneLineError(args + option + ["--resume"], mentions: words)
        }
    }

    /// --plan shows the σ update and the companion's numerics, each option given changing them.
    @Test func planShowsTheSigmaUpdateAndNumerics() throws {
        let args = ["remove-ln", "gpt2-tiny"] + TrainCLITests.small + Self.compressed + ["--schedule-steps", "20", "--plan"]
        let text = try C.run(args)
        #expect(text.status == 0, "\(text.stderr)")
        #expect(text.stdout.contains("after every micro-batch forward") && text.stdout.contains("--sigma-update micro-batch"), "\(text.stdout)")
        #expect(text.stdout.contains("EOT targets masked on, aux target without BOS/EOT on, weight decay on LN weights on"), "\(text.stdout)")
        let plan = try Self.json(try C.run(args + ["--json"]).stdout)
        #expect(plan["sigma_update"] as? String == "micro-batch" && plan["decay_ln_weights"] as? Bool == true)
        let other = try Self.json(try C.run(args + ["--json", "--sigma-update", "step", "--no-mask-eot-targets", "--aux-target", "all",
                                                    "--no-decay-ln-weights"]).stdout)
        #expect(other["sigma_update"] as? String == "step" && other["momentum_per_update"] as? Double == other["momentum"] as? Double)
        #expect(other["mask_eot_targets"] as? Bool == false && other["aux_target_skips_bos_eot"] as? Bool == false
                && other["decay_ln_weights"] as? Bool == false)
        // Dropout: the model's config.json (gpt2-tiny's 0; without the keys transformers' 0.1), or as given.
        #expect(text.stdout.contains("dropout off"), "\(text.stdout)")
        #expect(plan["dropout"] as? [String: Double] == ["embd_pdrop": 0, "attn_pdrop": 0, "resid_pdrop": 0])
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        for f in ["model.safetensors", "vocab.json", "merges.txt"] {
            try FileManager.default.copyItem(at: C.repo.appendingPathComponent("models/gpt2-tiny/\(f)"), to: dir.appendingPathComponent(f))
        }
        let config = try String(contentsOf: C.repo.appendingPathComponent("models/gpt2-tiny/config.json"), encoding: .utf8)
        try config.split(separator: "\n").filter { !$0.contains("pdrop") }.joined(separator: "\n")
            .write(to: dir.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        let configured = try C.run(["remove-ln", dir.path] + Array(args.dropFirst(2)))
        #expect(configured.stdout.contains("dropout embd 0.1, attn 0.1, resid 0.1"), "\(configured.stdout) \(configured.stderr)")
        let given = try Self.json(try C.run(args + ["--json", "--dropout", "0.1", "--attn-pdrop", "0"]).stdout)
        #expect(given["dropout"] as? [String: Double] == ["embd_pdrop": 0.1, "attn_pdrop": 0, "resid_pdrop": 0.1])
        let keep = try Self.json(try C.run(args + ["--json", "--keep-ln"]).stdout)
        #expect(keep["decay_ln_weights"] as? Bool == false, "--keep-ln: the Trainer exempts real LayerNorms")
    }
}
