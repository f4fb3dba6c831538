import Foundation
import XCTest
import TestSupport

/// The MPI layer across real ranks: runs the `rqat-mpi-check` executable under mpirun.
final class MPITests: XCTestCase {
    func testCollectivesAndMessagesAcrossThreeRanks() throws {
        let result = try MPIRun.run(executable: "rqat-mpi-check", ranks: 3, arguments: [])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.output.contains("mpi-check ok: 3 ranks"), result.output)
    }

    func testSingleRankWorldWithoutMpirun() throws {
        let result = try MPIRun.run(executable: "rqat-mpi-check", ranks: nil, arguments: [])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertTrue(result.output.contains("mpi-check ok: 1 ranks"), result.output)
    }
}
