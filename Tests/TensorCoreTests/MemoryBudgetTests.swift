import Foundation
import Testing
import TensorCore

/// A size beyond the machine is an error with the figure, never an abort (issue 16, item 7).
@Suite struct MemoryBudgetTests {
    @Test func anArenaBeyondTheMachineThrows() throws {
        let available = try #require(MemoryBudget.availableBytes)
        let floats = available / MemoryLayout<Float>.stride + (1 << 30)
        let error = #expect(throws: MemoryError.self) { _ = try Arena(capacity: floats) }
        #expect(error?.bytes == floats * MemoryLayout<Float>.stride)
        #expect(error?.errorDescription?.contains("available") == true)
        // A size whose bytes overflow Int is refused too.
        #expect(throws: MemoryError.self) { _ = try Arena(capacity: Int.max / 2) }
        // What fits is allocated as before.
        #expect(try Arena(capacity: 1 << 20).capacity == 1 << 20)
    }

    @Test func smallChecksPassAndFiguresRead() throws {
        try MemoryBudget.check(bytes: 1 << 20)
        #expect(throws: MemoryError.self) { try MemoryBudget.check(bytes: Int.max / 2) }
        #expect(MemoryBudget.format(1_500_000_000) == "1.50 GB")
        #expect(MemoryBudget.format(312_000_000) == "312 MB")
    }
}
