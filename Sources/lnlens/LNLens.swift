import ArgumentParser
import Distributed
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
        subcommands: [InspectCommand.self, TokenizeCommand.self, RunCommand.self, ExportCommand.self, PromptsCommand.self, DLACommand.self, PatchCommand.self, EdgesCommand.self, CircuitCommand.self, MergeCommand.self, ReportCommand.self, PlotCommand.self, RunsCommand.self, QueryCommand.self, DiffCommand.self, MigrateCommand.self, TrainCommand.self, RemoveLNCommand.self, EvalCommand.self, SinksCommand.self, NormsCommand.self, LensCommand.self, CompareCommand.self, NeuronsCommand.self])

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
        case "sinks", "norms", "lens", "compare": "lower --batch (sequences per forward pass) or --context"
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
        let world = startMPI()
        do {
            var command = try parseAsRoot(Self.joiningNegativeValues(arguments))
            if world.size > 1, !(command is TrainCommand || command is RemoveLNCommand || command is EvalCommand) {
                throw DistributedError.notDistributed(command: arguments.first ?? "", size: world.size)
            }
            try command.run()
            world.finalize()
        } catch {
            guard let message = message(error, command: arguments.first ?? "") else {
                world.finalize()
                exit(withError: error)
            }
            // Every rank refuses a mismatch alike: rank 0 says it once.
            let echoed = if case .differs? = error as? DistributedError { true } else { false }
            if echoed && !world.isRoot { sleep(10) }  // rank 0 says it and ends the job
            // An error every rank meets (a bad option, a schedule that does not fit): rank 0's line
            // is the one to see, and the first MPI_Abort ends every rank, so the others let it go
            // first and speak only if still alive (the error was theirs alone).
            if !echoed && !world.isRoot && world.size > 1 { sleep(2) }
            if world.isRoot || !echoed { printErr("lnlens: error: \(world.isRoot ? "" : "(rank \(world.rank)) ")\(message)") }
            let code = ExitStatus.of(error) ?? exitCode(for: error).rawValue
            if world.size > 1 { world.abort(code: code == 0 ? 1 : code) }  // the other ranks would wait for this one forever
            Foundation.exit(code)
        }
    }

    /// Starts MPI when a launcher (mpirun, srun) started lnlens (`Communicator.startIfLaunched`);
    /// ranks other than 0 print nothing but errors.
    static func startMPI() -> Communicator {
        do {
            let world = try Communicator.startIfLaunched()
            if !world.isRoot { _ = dup2(open("/dev/null", O_WRONLY), STDOUT_FILENO) }
            return world
        } catch {
            printErr("lnlens: error: \(Files.describe(error))")
            Foundation.exit(1)
        }
    }

    /// The one line printed for `error`, or nil for a help or version request (printed as usual,
    /// exit 0). Memory refusals add what to lower; Foundation's file errors are put in words; the
    /// parser's own usage errors keep their first line and point at the help (exit 64).
    static func message(_ error: any Error, command: String) -> String? {
        switch error {
        case let error as JobError: return error.errorDescription ?? String(describing: error)
        case let error where memoryError(error) != nil: return "\(memoryError(error)!.errorDescription!); \(memoryHint(command))"
        case let error as NSError where [NSCocoaErrorDomain, NSPOSIXErrorDomain].contains(error.domain): return Files.describe(error)
        case let error as LocalizedError: return Files.describe(error)
        case let error as FileProblem: return error.description
        default:
            if exitCode(for: error) == .success { return nil }
            let first = self.message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
            return "\(first) (see 'lnlens help')"
        }
    }
}
