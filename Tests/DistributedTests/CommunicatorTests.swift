import Testing
@testable import Distributed

/// The communicator as one process sees it (the collectives over several ranks are tested through
/// the binary under mpirun: CLITests/MPICLITests).
@Suite struct CommunicatorTests {
    @Test func singleIsRankZeroOfOneAndItsCollectivesAreTheIdentity() throws {
        let c = Communicator.single
        #expect(c.rank == 0 && c.size == 1 && c.isRoot && !c.usesMPI)
        var values = [1.5, -2.0, 3.25]
        try c.allreduceSum(&values)
        #expect(values == [1.5, -2.0, 3.25])
        var floats: [Float] = [1, 2, 3]
        try floats.withUnsafeMutableBufferPointer { try c.allreduceSum($0.baseAddress!, count: 3) }
        #expect(floats == [1, 2, 3])
        #expect(try c.broadcast(42) == 42)
        try c.checkSame(digest: 7, what: "the options")
        try c.barrier()
    }

    @Test func launchersAreRecognisedByTheirVariables() {
        #expect(Communicator.launcher(in: [:]) == nil)
        #expect(Communicator.launcher(in: ["OMPI_COMM_WORLD_SIZE": "4"])?.size == 4)
        #expect(Communicator.launcher(in: ["PMI_SIZE": "2"])?.variable == "PMI_SIZE")
        #expect(Communicator.launcher(in: ["PMIX_RANK": "0"])?.variable == "PMIX_RANK")
        // A Slurm batch script (or srun of one task) is not a launch of several ranks.
        #expect(Communicator.launcher(in: ["SLURM_NTASKS": "8", "SLURM_PROCID": "0"]) == nil)
        #expect(Communicator.launcher(in: ["SLURM_STEP_NUM_TASKS": "1"]) == nil)
        #expect(Communicator.launcher(in: ["SLURM_STEP_NUM_TASKS": "8"])?.size == 8)
    }

    @Test func withoutALauncherLNLensRunsAsOneProcess() throws {
        let c = try Communicator.startIfLaunched(environment: [:])
        #expect(c.size == 1 && c.rank == 0)
    }

    /// A build without MPI refuses to be several ranks, rather than have each write the same output.
    @Test(.enabled(if: !Communicator.builtWithMPI, "a build with MPI starts MPI here instead"))
    func aBuildWithoutMPIRefusesSeveralRanks() {
        #expect(throws: DistributedError.notBuilt(variable: "OMPI_COMM_WORLD_SIZE", size: 2)) {
            try Communicator.startIfLaunched(environment: ["OMPI_COMM_WORLD_SIZE": "2"])
        }
    }

    @Test func mismatchesNameTheRanksAndWhatDiffers() {
        let e = DistributedError.differs(what: "the options", ranks: [1, 3], size: 4)
        #expect(e.errorDescription == "ranks 1, 3 of 4 have other options than rank 0: start every rank with the same command line, files and lnlens build")
    }
}
