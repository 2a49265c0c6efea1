import Foundation
import Testing
@testable import Training

@Suite struct LearningRateScheduleTests {
    @Test func warmupStartsAtZero() {
        let s = LearningRateSchedule(peak: 6e-4, floor: 3e-4, warmupSteps: 3, totalSteps: 10)
        #expect(s.rate(at: 0) == 0)
    }
}
