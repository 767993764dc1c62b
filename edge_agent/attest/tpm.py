"""The TPM 2.0 provider: PCR values as measurements, and a quote over them for the hub.

A firmware profile with a ``[tpm]`` table (:class:`~edge_agent.protocol.firmware_profile.Tpm`) makes
the agent measure with :class:`TpmProvider`: every file and fact of the default provider,
plus each selected PCR of the sha256 bank as the measurement ``pcr:sha256:N`` (its value is
already a SHA-256 digest). Those are judged against the bundle like any other measurement,
so an extended PCR turns the local verdict to fail within one re-measure interval.

Answering a hub challenge, :meth:`TpmProvider.quote` has the TPM sign a TPM2_Quote over the
same PCRs with the device's attestation key (AK), ``qualifyingData`` bound to the challenge
(:func:`~edge_agent.protocol.attestation.quote_binding`); the hub checks it against the AK
registered at enrolment (:mod:`hub.core.tpm_quote`).

The AK is an ECC P-256 restricted signing key (ECDSA, SHA-256), a primary key of the owner
hierarchy made persistent at ``ak_handle`` by :func:`enroll` (``edge-agent attest
tpm-enroll``). A restricted key signs only structures the TPM built itself, so it cannot be
made to sign a forged quote. The owner hierarchy's authorization must be empty (the usual
state of a gateway's TPM); a TPM with an owner password set cannot be enrolled here.

``tpm2-pytss`` is imported only when a profile asks for the TPM: an agent without it, and a
profile without ``[tpm]``, behave exactly as before. A profile asking for a TPM that is not
there stops the agent at start with a :class:`~edge_agent.errors.ConfigError`; a TPM that
fails later makes the PCR measurements fail (the gate denies) and challenges go unanswered
(the hub's result expires: deny). TPM calls are serialised by a lock (the agent measures in a
worker thread while it may answer a challenge) and each opens its own connection.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge_agent.attest.measure import FileFactProvider, Measurement, MeasurementSet
from edge_agent.errors import ConfigError
from edge_agent.protocol.attestation import AttestationError, TpmQuote, quote_binding
from edge_agent.protocol.firmware_profile import Profile, Tpm

__all__ = ["TpmProvider", "TpmUnavailable", "ak_public_pem", "enroll"]

MAX_PCRS_PER_READ = 8
"""TPM2_PCR_Read returns at most eight digests per call (TPM 2.0 part 3, 22.4)."""
_EXTRA_HINT = (
    "install the agent's TPM support (pip install 'edgegov[tpm]'; Debian: apt-get install "
    "libtss2-dev) or remove the [tpm] table from the firmware profile"
)


class TpmUnavailable(ConfigError):
    """The TPM the profile names cannot be used: no tpm2-pytss, no TPM, no key."""

    code = "tpm_unavailable"


class _TpmFailure(Exception):
    """A TPM call failed (kept as a measurement error or turned into our error types)."""


def _tss() -> Any:
    """The ``tpm2_pytss`` module, imported on first use.

    Raises:
        TpmUnavailable: it is not installed or its TSS libraries are missing.
    """
    try:
        return importlib.import_module("tpm2_pytss")
    except ImportError as exc:
        raise TpmUnavailable(
            f"the firmware profile asks for a TPM ([tpm]), but tpm2-pytss cannot be loaded "
            f"({exc}): {_EXTRA_HINT}"
        ) from exc


@contextlib.contextmanager
def _session(settings: Tpm) -> Iterator[Any]:
    """An ``ESAPI`` context on the TPM ``settings.tcti`` names, closed on exit.

    Raises:
        TpmUnavailable: tpm2-pytss is missing.
        _TpmFailure: the TPM cannot be reached.
    """
    tss = _tss()
    name, _, conf = settings.tcti.partition(":")
    try:
        tcti = tss.TCTILdr(name, conf)
    except (tss.TSS2_Exception, OSError) as exc:
        raise _TpmFailure(f"cannot reach the TPM at {settings.tcti}: {exc}") from exc
    try:
        esapi = tss.ESAPI(tcti)
    except (tss.TSS2_Exception, OSError) as exc:
        tcti.close()
        raise _TpmFailure(f"cannot open the TPM at {settings.tcti}: {exc}") from exc
    try:
        yield esapi
    except (tss.TSS2_Exception, OSError) as exc:
        raise _TpmFailure(f"the TPM at {settings.tcti} refused: {exc}") from exc
    finally:
        esapi.close()
        tcti.close()


def _read_pcrs(esapi: Any, settings: Tpm) -> dict[int, bytes]:
    """PCR index -> value of every PCR ``settings`` selects, eight per TPM call."""
    tss = _tss()
    values: dict[int, bytes] = {}
    for start in range(0, len(settings.pcrs), MAX_PCRS_PER_READ):
        chunk = settings.pcrs[start : start + MAX_PCRS_PER_READ]
        selection = tss.TPML_PCR_SELECTION.parse(f"{settings.bank}:{','.join(map(str, chunk))}")
        _, _, digests = esapi.pcr_read(selection)
        read = [bytes(d) for d in digests]
        if len(read) != len(chunk) or any(len(d) != 32 for d in read):
            raise _TpmFailure(
                f"the TPM returned {len(read)} of PCRs {chunk} of the {settings.bank} bank: "
                "is that bank allocated?"
            )
        values.update(zip(chunk, read, strict=True))
    return values


def _persistent(esapi: Any, handle: int) -> bool:
    tss = _tss()
    constants = tss.constants
    _, data = esapi.get_capability(constants.TPM2_CAP.HANDLES, handle, 1)
    return handle in list(data.data.handles)


def _ak(esapi: Any, settings: Tpm) -> Any:
    """The ESYS handle of the AK at ``settings.ak_handle``, checked to be a restricted
    signing key.

    Raises:
        TpmUnavailable: there is no key there, or another kind of key.
    """
    constants = _tss().constants
    handle = settings.ak_handle
    if not _persistent(esapi, handle):
        raise TpmUnavailable(
            f"the TPM holds no attestation key at handle 0x{handle:08x}: run "
            "'edge-agent attest tpm-enroll' and register its key at the hub"
        )
    ak = esapi.tr_from_tpmpublic(handle)
    attributes = esapi.read_public(ak)[0].publicArea.objectAttributes
    wanted = constants.TPMA_OBJECT.RESTRICTED | constants.TPMA_OBJECT.SIGN_ENCRYPT
    if attributes & wanted != wanted or attributes & constants.TPMA_OBJECT.DECRYPT:
        raise TpmUnavailable(
            f"the key at TPM handle 0x{handle:08x} is not a restricted signing key: choose "
            "another ak_handle in the profile's [tpm] table"
        )
    return ak


def _ak_template(tss: Any) -> Any:
    constants = tss.constants
    attributes = (
        constants.TPMA_OBJECT.RESTRICTED
        | constants.TPMA_OBJECT.SIGN_ENCRYPT
        | constants.TPMA_OBJECT.FIXEDTPM
        | constants.TPMA_OBJECT.FIXEDPARENT
        | constants.TPMA_OBJECT.SENSITIVEDATAORIGIN
        | constants.TPMA_OBJECT.USERWITHAUTH
        | constants.TPMA_OBJECT.NODA
    )
    template = tss.TPM2B_PUBLIC.parse("ecc256:ecdsa-sha256", objectAttributes=attributes)
    template.publicArea.parameters.eccDetail.symmetric.algorithm = constants.TPM2_ALG.NULL
    return template


def enroll(settings: Tpm) -> bytes:
    """Create the AK at ``settings.ak_handle`` unless one is there; its PEM public key.

    Raises:
        TpmUnavailable: tpm2-pytss or the TPM is missing, the handle holds another kind of
            key, or the TPM refused (an owner password is set, the handle range is full).
    """
    tss = _tss()
    try:
        with _session(settings) as esapi:
            if not _persistent(esapi, settings.ak_handle):
                created = esapi.create_primary(
                    tss.TPM2B_SENSITIVE_CREATE(), _ak_template(tss), tss.constants.ESYS_TR.OWNER
                )[0]
                try:
                    esapi.evict_control(tss.constants.ESYS_TR.OWNER, created, settings.ak_handle)
                finally:
                    esapi.flush_context(created)
            return _pem(esapi, _ak(esapi, settings))
    except _TpmFailure as exc:
        raise TpmUnavailable(f"cannot enroll the TPM attestation key: {exc}") from exc


def ak_public_pem(settings: Tpm) -> bytes:
    """The PEM public key of the AK at ``settings.ak_handle``.

    Raises:
        TpmUnavailable: tpm2-pytss, the TPM or the key is missing.
    """
    try:
        with _session(settings) as esapi:
            return _pem(esapi, _ak(esapi, settings))
    except _TpmFailure as exc:
        raise TpmUnavailable(str(exc)) from exc


def _pem(esapi: Any, ak: Any) -> bytes:
    return bytes(esapi.read_public(ak)[0].to_pem())


class TpmProvider:
    """Files and facts as :class:`FileFactProvider` measures them, plus the profile's PCRs;
    and quotes over those PCRs for the hub's challenges."""

    def __init__(self, profile: Profile, root: Path = Path("/")) -> None:
        if profile.tpm is None:
            raise ValueError(f"the firmware profile {profile.name} has no [tpm] table")
        self._files = FileFactProvider(profile, root)
        self._settings = profile.tpm
        self._lock = threading.Lock()

    @property
    def profile(self) -> Profile:
        return self._files.profile

    def check(self) -> bytes:
        """Check at start that tpm2-pytss, the TPM and the AK are there; the AK's PEM.

        Raises:
            TpmUnavailable: one of them is missing (the message says what to do).
        """
        with self._lock:
            return ak_public_pem(self._settings)

    def measure(self) -> MeasurementSet:
        """Files and facts, then one item per PCR; a TPM that cannot be read makes every PCR
        item an error (the verdict fails), never an exception."""
        files = self._files.measure()
        settings = self._settings
        try:
            with self._lock, _session(settings) as esapi:
                values: dict[int, bytes] | str = _read_pcrs(esapi, settings)
        except (_TpmFailure, TpmUnavailable) as exc:
            values = str(exc)
        items = tuple(
            Measurement(
                name,
                "pcr",
                f"TPM PCR {pcr} ({settings.bank})",
                settings.scope,
                None if isinstance(values, str) else values[pcr],
                error=values if isinstance(values, str) else None,
            )
            for pcr, name in zip(settings.pcrs, settings.measure_names, strict=True)
        )
        return MeasurementSet(files.profile, files.items + items)

    def quote(self, device: str, nonce: bytes) -> TpmQuote:
        """A TPM2_Quote over the profile's PCRs by the AK, bound to ``device`` and ``nonce``.

        Raises:
            AttestationError: the TPM, tpm2-pytss or the AK is not usable now.
        """
        settings = self._settings
        selection = f"{settings.bank}:{','.join(map(str, settings.pcrs))}"
        try:
            tss = _tss()
            with self._lock, _session(settings) as esapi:
                attest, signature = esapi.quote(
                    _ak(esapi, settings),
                    tss.TPML_PCR_SELECTION.parse(selection),
                    tss.TPM2B_DATA(quote_binding(device, nonce)),
                    tss.TPMT_SIG_SCHEME(scheme=tss.constants.TPM2_ALG.NULL),
                )
                return TpmQuote(bytes(attest), bytes(signature.marshal()))
        except (_TpmFailure, TpmUnavailable) as exc:
            raise AttestationError(f"the TPM cannot quote: {exc}") from exc
