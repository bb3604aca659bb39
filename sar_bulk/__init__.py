"""sar-bulk: GDPR subject-access dossiers in bulk from Dynamics 365 Dataverse orgs.

The package's public surface is what ``__all__`` lists; everything else is internal and may change.
"""

from sar_bulk._version import __version__
from sar_bulk.errors import SarBulkError
from sar_bulk.sources.interaction_types import ALL_TYPES, InteractionType

__all__ = ["ALL_TYPES", "InteractionType", "SarBulkError", "__version__"]
