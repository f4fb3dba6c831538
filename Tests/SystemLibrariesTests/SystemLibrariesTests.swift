import XCTest
import CMPI
import COpenBLAS
import CZstd

/// The three system libraries link and answer: a wrong pkg-config set-up fails here first.
final class SystemLibrariesTests: XCTestCase {
    func testMPIHeaderAndLibrary() {
        var major: Int32 = 0, minor: Int32 = 0
        XCTAssertEqual(MPI_Get_version(&major, &minor), rqat_mpi_success())
        XCTAssertGreaterThanOrEqual(major, 3)
        XCTAssertNotEqual(rqat_mpi_float(), rqat_mpi_double())
    }

    func testOpenBLASSgemm() {
        let a: [Float] = [1, 2, 3, 4], b: [Float] = [5, 6, 7, 8]
        var c = [Float](repeating: 0, count: 4)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 2, 2, 2, 1, a, 2, b, 2, 0, &c, 2)
        XCTAssertEqual(c, [19, 22, 43, 50])
    }

    func testZstdRoundTrip() {
        let input = [UInt8]((0..<10_000).map { UInt8($0 % 7) })
        var compressed = [UInt8](repeating: 0, count: ZSTD_compressBound(input.count))
        let n = ZSTD_compress(&compressed, compressed.count, input, input.count, 3)
        XCTAssertEqual(ZSTD_isError(n), 0)
        XCTAssertLessThan(n, input.count / 10)
        var output = [UInt8](repeating: 0, count: input.count)
        let m = ZSTD_decompress(&output, output.count, compressed, n)
        XCTAssertEqual(m, input.count)
        XCTAssertEqual(output, input)
    }
}
