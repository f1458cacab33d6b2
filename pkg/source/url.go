package source

import (
	"errors"
	"net/url"
	"strconv"

	sluicev1 "github.com/sluicedata/sluice/proto/sluice/v1"
)

// PageURL is the source URL with a page's pagination parameters (the offset or page number start,
// and the limit) and the parameters that bound its slice.
func PageURL(src *sluicev1.HttpSource, start, limit uint64, bounds map[string]string) (string, error) {
	u, err := url.Parse(src.Url)
	if err != nil {
		return "", errors.New("source url does not parse")
	}
	q := u.Query()
	pag := src.Pagination
	switch pag.GetType() {
	case sluicev1.Pagination_TYPE_PAGE:
		q.Set(pag.PageParam, strconv.FormatUint(start, 10))
	default:
		q.Set(pag.GetOffsetParam(), strconv.FormatUint(start, 10))
	}
	q.Set(pag.GetLimitParam(), strconv.FormatUint(limit, 10))
	for k, v := range bounds {
		q.Set(k, v)
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}
