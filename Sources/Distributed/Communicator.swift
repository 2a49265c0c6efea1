import CMPI
import Foundation

/// The processes of a data-parallel `train`, `remove-ln` or `eval` (`mpirun -n K lnlens …`, `srun`): this
/// process's rank, their count, and the few collectives the trainer needs. Without a launcher in
/// the environment (or in a build without MPI) it is `single`: rank 0 of 1, every collective the
/// identity, and lnlens runs as one process.
///
///     let world = try Communicator.startIfLaunched()
///     try world.allreduceSum(gradients, count: n)      // every rank now holds the sum
///     try world.checkSame(digest: optionsHash, what: "the options")
public final class Communicator: @unchecked Sendable {
    public let rank: Int
    public let size: Int
    /// Whether collectives go through MPI (false for `single`).
    public let usesMPI: Bool
    /// Seconds spent in `allreduceSum` and the non-blocking reductions' calls so far (what the
    /// bench reports per step).
    public private(set) var allreduceSeconds = 0.0

    init(rank: Int, size: Int, usesMPI: Bool) {
        (self.rank, self.size, self.usesMPI) = (rank, size, usesMPI)
    }

    /// One process: rank 0 of 1.
    public static let single = Communicator(rank: 0, size: 1, usesMPI: false)

    /// The job's communicator, set by `startIfLaunched` (`single` until then).
    nonisolated(unsafe) public private(set) static var world = single

    public var isRoot: Bool { rank == 0 }

    /// Whether this build calls a real MPI (the Makefile found mpicc and passed -DLNLENS_MPI).
    public static var builtWithMPI: Bool { lnlens_mpi_built() == 1 }

    /// The MPI library's version line, or "" without MPI.
    public static var libraryVersion: String { String(cString: lnlens_mpi_library_version()) }

    /// The process count a launcher announced, and the variable it is read from; nil when no
    /// launcher started this process (Open MPI's mpirun, a PMI/PMIx launcher such as MPICH's
    /// mpiexec, or Slurm's srun of more than one task).
    public static func launcher(in environment: [String: String]) -> (size: Int, variable: String)? {
        for variable in ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_STEP_NUM_TASKS"] {
            guard let value = environment[variable], let n = Int(value) else { continue }
            if variable == "SLURM_STEP_NUM_TASKS" && n < 2 { continue }
            return (n, variable)
        }
        if environment["PMIX_RANK"] != nil { return (0, "PMIX_RANK") }
        return nil
    }

    /// Starts MPI when a launcher started this process and makes `world` its communicator;
    /// otherwise leaves `world` single. Refuses a launch of several processes by a build without MPI.
    @discardableResult
    public static func startIfLaunched(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Communicator {
        guard let launch = launcher(in: environment) else { return world }
        guard builtWithMPI else {
            if launch.size == 1 { return world }
            throw DistributedError.notBuilt(variable: launch.variable, size: launch.size)
        }
        guard lnlens_mpi_init() == 0 else { throw DistributedError.callFailed(call: "MPI_Init_thread") }
        world = Communicator(rank: Int(lnlens_mpi_rank()), size: Int(lnlens_mpi_size()), usesMPI: true)
        return world
    }

    /// Sums `count` floats at `data` over every rank, in place.
    public func allreduceSum(_ data: UnsafeMutablePointer<Float>, count: Int) throws {
        guard usesMPI, size > 1 else { return }
        let t0 = lnlens_mpi_wtime()
        guard lnlens_mpi_allreduce_float(data, count) == 0 else { throw DistributedError.callFailed(call: "MPI_Allreduce") }
        allreduceSeconds += lnlens_mpi_wtime() - t0
    }

    /// Starts summing `count` floats at `data` over every rank, in place, without waiting (an
    /// `MPI_Iallreduce`); the sum is there after `finishAllreduces`, and `data` must not be
    /// touched before. Every rank starts the same reductions in the same order.
    public func startAllreduceSum(_ data: UnsafeMutablePointer<Float>, count: Int) throws {
        guard usesMPI, size > 1 else { return }
        let t0 = lnlens_mpi_wtime()
        guard lnlens_mpi_iallreduce_float(data, count) == 0 else { throw DistributedError.callFailed(call: "MPI_Iallreduce") }
        allreduceSeconds += lnlens_mpi_wtime() - t0
    }

    /// Lets the started reductions advance (`MPI_Testall`): MPI moves a non-blocking reduction on
    /// only inside its calls, so the trainer calls this between layers of the backward.
    public func progressAllreduces() throws {
        guard usesMPI, size > 1 else { return }
        let t0 = lnlens_mpi_wtime()
        guard lnlens_mpi_testall() == 0 else { throw DistributedError.callFailed(call: "MPI_Testall") }
        allreduceSeconds += lnlens_mpi_wtime() - t0
    }

    /// Waits for every reduction `startAllreduceSum` started (`MPI_Waitall`).
    public func finishAllreduces() throws {
        guard usesMPI, size > 1 else { return }
        let t0 = lnlens_mpi_wtime()
        guard lnlens_mpi_waitall() == 0 else { throw DistributedError.callFailed(call: "MPI_Waitall") }
        allreduceSeconds += lnlens_mpi_wtime() - t0
    }

    /// Sums `values` over every rank, in place.
    public func allreduceSum(_ values: inout [Double]) throws {
        guard usesMPI, size > 1, !values.isEmpty else { return }
        let t0 = lnlens_mpi_wtime()
        let status = values.withUnsafeMutableBufferPointer { lnlens_mpi_allreduce_double($0.baseAddress!, $0.count) }
        guard status == 0 else { throw DistributedError.callFailed(call: "MPI_Allreduce") }
        allreduceSeconds += lnlens_mpi_wtime() - t0
    }

    /// Rank 0's `value`, on every rank.
    public func broadcast(_ value: Int64) throws -> Int64 {
        guard usesMPI, size > 1 else { return value }
        var v = value
        guard lnlens_mpi_bcast(&v, 8, 0) == 0 else { throw DistributedError.callFailed(call: "MPI_Bcast") }
        return v
    }

    /// Rank 0's `values` (its count first), on every rank; the others' `values` are not read.
    public func broadcast(_ values: [Int64]) throws -> [Int64] {
        guard usesMPI, size > 1 else { return values }
        let count = Int(try broadcast(Int64(values.count)))
        var out = isRoot ? values : [Int64](repeating: 0, count: count)
        guard count > 0 else { return out }
        let status = out.withUnsafeMutableBytes { lnlens_mpi_bcast($0.baseAddress!, $0.count, 0) }
        guard status == 0 else { throw DistributedError.callFailed(call: "MPI_Bcast") }
        return out
    }

    /// Refuses (on every rank) to go on unless every rank has rank 0's `digest` of `what`
    /// ("the options", "the weights", "the training data"), naming the ranks that differ.
    public func checkSame(digest: UInt64, what: String) throws {
        guard usesMPI, size > 1 else { return }
        let root = UInt64(bitPattern: try broadcast(Int64(bitPattern: digest)))
        var differs = [Double](repeating: 0, count: size)
        differs[rank] = root == digest ? 0 : 1
        try allreduceSum(&differs)
        let ranks = differs.indices.filter { differs[$0] != 0 }
        if !ranks.isEmpty { throw DistributedError.differs(what: what, ranks: ranks, size: size) }
    }

    /// Waits for every rank.
    public func barrier() throws {
        guard usesMPI, size > 1 else { return }
        guard lnlens_mpi_barrier() == 0 else { throw DistributedError.callFailed(call: "MPI_Barrier") }
    }

    /// Ends the whole job (every rank) with `code`.
    public func abort(code: Int32) -> Never {
        if usesMPI { lnlens_mpi_abort(code) }
        exit(code)
    }

    /// Ends MPI (when started) before the process exits.
    public func finalize() {
        if usesMPI { _ = lnlens_mpi_finalize() }
    }
}

public enum DistributedError: Error, LocalizedError, Equatable {
    case notBuilt(variable: String, size: Int)
    case callFailed(call: String)
    case differs(what: String, ranks: [Int], size: Int)
    /// A command that does not run data-parallel was started on several ranks.
    case notDistributed(command: String, size: Int)

    public var errorDescription: String? {
        switch self {
        case .notBuilt(let variable, let size):
            "a launcher started \(size) processes (\(variable)) but this lnlens was built without MPI: rebuild with make (it finds mpicc; make setup installs Open MPI) or run lnlens without mpirun/srun"
        case .callFailed(let call): "\(call) failed: see the MPI library's message above"
        case .differs(let what, let ranks, let size):
            "rank\(ranks.count == 1 ? "" : "s") \(ranks.map(String.init).joined(separator: ", ")) of \(size) \(ranks.count == 1 ? "has" : "have") other \(what.replacingOccurrences(of: "the ", with: "")) than rank 0: start every rank with the same command line, files and lnlens build"
        case .notDistributed(let command, let size):
            "lnlens \(command) does not run over MPI (\(size) ranks; train, remove-ln and eval do): run it as one process, or split its prompts with --shard (README, Scale-out)"
        }
    }
}
