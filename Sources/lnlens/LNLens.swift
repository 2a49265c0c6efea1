import ArgumentParser
import Foundation
import GPT2
import Jobs
import Support
import TensorCore

@main
struct LNLens: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lnlens",
        abstract: "Mechanistic interpretability of GPT-2 and its LayerNorm-free twin.",
        subcommands: [InspectCommand.self, TokenizeCommand.self, RunCommand.self, ExportCommand.self, PromptsCommand.self, DLACommand.self, PatchCommand.self, MergeCommand.self, ReportCommand.self, PlotCommand.self, RunsCommand.self, QueryCommand.self, DiffCommand.self, MigrateCommand.self, TrainCommand.self, RemoveLNCommand.self, EvalCommand.self])

    /// `--batch-size -1` (or `--shard -1/3`) becomes `--batch-size=-1`: the argument parser would
    /// take `-1` for a flag and report a missing value, where the option's own check says what is
    /// wrong.
    static func joiningNegativeValues(_ arguments: [String]) -> [String] {
        var out: [String] = []
        for argument in arguments {
            if let last = out.last, last.hasPrefix("--"), !last.contains("="), last != "--",
               argument.hasPrefix("-"), Double(argument) != nil || argument.dropFirst().first?.isNumber == true {
                out[out.count - 1] = last + "=" + argument
            } else {
                out.append(argument)
            }
        }
        return out
    }

    /// The allocation a command was refused, wherever it surfaced.
    static func memoryError(_ error: any Error) -> MemoryError? {
        if let m = error as? MemoryError { return m }
        if case .outOfMemory(let m)? = error as? GPT2Error { return m }
        return nil
    }

    /// What to change when `command` needs more memory than the machine has.
    static func memoryHint(_ command: String) -> String {
        switch command {
        case "train", "remove-ln": "lower --micro-batch (sequences per forward/backward pass) or --seq-len, or train a smaller model"
        case "eval": "lower --batch (windows per forward pass) or --context"
        case "dla", "patch": "lower --batch-size (prompts per forward pass)"
        case "run": "use a shorter prompt, fewer --hooks, or a smaller model"
        default: "free memory, or use a machine with more"
        }
    }

    static func main() {
        OpenBLASEnvironment.reexecWithFastKernelsIfNeeded()
        MemoryTuning.keepFreedMemory()
        let arguments = Array(CommandLine.arguments.dropFirst())
        if arguments == ["--version"] || arguments == ["version"] {
            print(LNLensVersion.full)
            Foundation.exit(0)
        }
        do {
            var command = try parseAsRoot(Self.joiningNegativeValues(arguments))
            try command.run()
        } catch let error as JobError {
            printErr("lnlens: error: \(error.errorDescription ?? String(describing: error))")
            // 130 (128 + SIGINT) for a run the user stopped, as a shell reports a process killed by Ctrl-C.
            if case .interrupted = error { Foundation.exit(130) }
            Foundation.exit(1)
        } catch let error where memoryError(error) != nil {
            printErr("lnlens: error: \(memoryError(error)!.errorDescription!); \(memoryHint(arguments.first ?? ""))")
            Foundation.exit(1)
        } catch let error as NSError where [NSCocoaErrorDomain, NSPOSIXErrorDomain].contains(error.domain) {
            printErr("lnlens: error: \(Files.describe(error))")
            Foundation.exit(1)
        } catch let error as LocalizedError {
            // Our own errors: one line naming what was wrong and what to do, non-zero exit
            // (Foundation's file errors in words, not as a Cocoa domain and code).
            printErr("lnlens: error: \(Files.describe(error))")
            Foundation.exit(1)
        } catch {
            // Help and version requests print as usual; usage errors get one line, like ours.
            let code = exitCode(for: error)
            if code == .success { exit(withError: error) }
            let message = self.message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
            printErr("lnlens: error: \(message) (see 'lnlens help')")
            Foundation.exit(code.rawValue)
        }
    }
}
